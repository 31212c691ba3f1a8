// asyncAPI (NVIDIA cuda-samples, 0_Introduction/asyncAPI): one increment per element, queued
// between an upload and a download while the CPU keeps working.
extern "C" __global__ void increment_kernel(int *g_data, int inc_value) {
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    g_data[idx] = g_data[idx] + inc_value;
}

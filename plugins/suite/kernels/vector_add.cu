// vectorAdd (NVIDIA cuda-samples, 0_Introduction/vectorAdd): C = A + B.
extern "C" __global__ void vector_add(const float *A, const float *B, float *C, int numElements) {
    int i = blockDim.x * blockIdx.x + threadIdx.x;
    if (i < numElements) {
        C[i] = A[i] + B[i];
    }
}

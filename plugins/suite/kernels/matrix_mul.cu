// matrixMul (NVIDIA cuda-samples, 0_Introduction/matrixMul): C = A * B with square tiles of
// BLOCK_SIZE x BLOCK_SIZE in shared memory. wA is A's width, wB is B's width; the launch covers C
// with one thread per element (C's sizes must be multiples of the block size, as in the sample).
template <int BLOCK_SIZE>
__device__ void matrix_mul_tiled(float *C, float *A, float *B, int wA, int wB) {
    int bx = blockIdx.x;
    int by = blockIdx.y;
    int tx = threadIdx.x;
    int ty = threadIdx.y;
    int aBegin = wA * BLOCK_SIZE * by;
    int aEnd = aBegin + wA - 1;
    int aStep = BLOCK_SIZE;
    int bBegin = BLOCK_SIZE * bx;
    int bStep = BLOCK_SIZE * wB;
    float Csub = 0;
    for (int a = aBegin, b = bBegin; a <= aEnd; a += aStep, b += bStep) {
        __shared__ float As[BLOCK_SIZE][BLOCK_SIZE];
        __shared__ float Bs[BLOCK_SIZE][BLOCK_SIZE];
        As[ty][tx] = A[a + wA * ty + tx];
        Bs[ty][tx] = B[b + wB * ty + tx];
        __syncthreads();
#pragma unroll
        for (int k = 0; k < BLOCK_SIZE; ++k) {
            Csub += As[ty][k] * Bs[k][tx];
        }
        __syncthreads();
    }
    int c = wB * BLOCK_SIZE * by + BLOCK_SIZE * bx;
    C[c + wB * ty + tx] = Csub;
}

extern "C" __global__ void matrix_mul_16(float *C, float *A, float *B, int wA, int wB) {
    matrix_mul_tiled<16>(C, A, B, wA, wB);
}

extern "C" __global__ void matrix_mul_32(float *C, float *A, float *B, int wA, int wB) {
    matrix_mul_tiled<32>(C, A, B, wA, wB);
}

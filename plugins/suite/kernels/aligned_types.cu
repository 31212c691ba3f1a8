// alignedTypes (NVIDIA cuda-samples, 6_Performance/alignedTypes): a grid-stride copy of arrays
// of small structs, with and without __align__, to show what alignment does to throughput.
typedef unsigned char uint8;
typedef unsigned short int uint16;
typedef struct { unsigned char r, g, b, a; } RGBA8_misaligned;
typedef struct { unsigned int l, a; } LA32_misaligned;
typedef struct { unsigned int r, g, b; } RGB32_misaligned;
typedef struct { unsigned int r, g, b, a; } RGBA32_misaligned;
typedef struct __align__(4) { unsigned char r, g, b, a; } RGBA8;
typedef unsigned int I32;
typedef struct __align__(8) { unsigned int l, a; } LA32;
typedef struct __align__(16) { unsigned int r, g, b; } RGB32;
typedef struct __align__(16) { unsigned int r, g, b, a; } RGBA32;
typedef struct __align__(16) { RGBA32 c1, c2; } RGBA32_2;

template <class TData>
__device__ void copy_elements(TData *d_odata, TData *d_idata, int numElements) {
    const int tid = blockDim.x * blockIdx.x + threadIdx.x;
    const int numThreads = blockDim.x * gridDim.x;
    for (int pos = tid; pos < numElements; pos += numThreads) {
        d_odata[pos] = d_idata[pos];
    }
}

// One extern "C" kernel per type, named copy_<type>; each type's size is checked when compiled.
static_assert(sizeof(uint8) == 1, "unexpected size of uint8");
extern "C" __global__ void copy_uint8(void *d_odata, void *d_idata, int numElements) {
    copy_elements<uint8>((uint8 *)d_odata, (uint8 *)d_idata, numElements);
}
static_assert(sizeof(uint16) == 2, "unexpected size of uint16");
extern "C" __global__ void copy_uint16(void *d_odata, void *d_idata, int numElements) {
    copy_elements<uint16>((uint16 *)d_odata, (uint16 *)d_idata, numElements);
}
static_assert(sizeof(RGBA8_misaligned) == 4, "unexpected size of RGBA8_misaligned");
extern "C" __global__ void copy_RGBA8_misaligned(void *d_odata, void *d_idata, int numElements) {
    copy_elements<RGBA8_misaligned>((RGBA8_misaligned *)d_odata, (RGBA8_misaligned *)d_idata, numElements);
}
static_assert(sizeof(LA32_misaligned) == 8, "unexpected size of LA32_misaligned");
extern "C" __global__ void copy_LA32_misaligned(void *d_odata, void *d_idata, int numElements) {
    copy_elements<LA32_misaligned>((LA32_misaligned *)d_odata, (LA32_misaligned *)d_idata, numElements);
}
static_assert(sizeof(RGB32_misaligned) == 12, "unexpected size of RGB32_misaligned");
extern "C" __global__ void copy_RGB32_misaligned(void *d_odata, void *d_idata, int numElements) {
    copy_elements<RGB32_misaligned>((RGB32_misaligned *)d_odata, (RGB32_misaligned *)d_idata, numElements);
}
static_assert(sizeof(RGBA32_misaligned) == 16, "unexpected size of RGBA32_misaligned");
extern "C" __global__ void copy_RGBA32_misaligned(void *d_odata, void *d_idata, int numElements) {
    copy_elements<RGBA32_misaligned>((RGBA32_misaligned *)d_odata, (RGBA32_misaligned *)d_idata, numElements);
}
static_assert(sizeof(RGBA8) == 4, "unexpected size of RGBA8");
extern "C" __global__ void copy_RGBA8(void *d_odata, void *d_idata, int numElements) {
    copy_elements<RGBA8>((RGBA8 *)d_odata, (RGBA8 *)d_idata, numElements);
}
static_assert(sizeof(I32) == 4, "unexpected size of I32");
extern "C" __global__ void copy_I32(void *d_odata, void *d_idata, int numElements) {
    copy_elements<I32>((I32 *)d_odata, (I32 *)d_idata, numElements);
}
static_assert(sizeof(LA32) == 8, "unexpected size of LA32");
extern "C" __global__ void copy_LA32(void *d_odata, void *d_idata, int numElements) {
    copy_elements<LA32>((LA32 *)d_odata, (LA32 *)d_idata, numElements);
}
static_assert(sizeof(RGB32) == 16, "unexpected size of RGB32");
extern "C" __global__ void copy_RGB32(void *d_odata, void *d_idata, int numElements) {
    copy_elements<RGB32>((RGB32 *)d_odata, (RGB32 *)d_idata, numElements);
}
static_assert(sizeof(RGBA32) == 16, "unexpected size of RGBA32");
extern "C" __global__ void copy_RGBA32(void *d_odata, void *d_idata, int numElements) {
    copy_elements<RGBA32>((RGBA32 *)d_odata, (RGBA32 *)d_idata, numElements);
}
static_assert(sizeof(RGBA32_2) == 32, "unexpected size of RGBA32_2");
extern "C" __global__ void copy_RGBA32_2(void *d_odata, void *d_idata, int numElements) {
    copy_elements<RGBA32_2>((RGBA32_2 *)d_odata, (RGBA32_2 *)d_idata, numElements);
}

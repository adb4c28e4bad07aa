/* A stand-in for libcudart with the calls edgesmlp.runtimes.cuda makes, for machines without a GPU.
 * "Device" memory is host memory, copies are memcpy, events read the monotonic clock. It lets the
 * TensorRT runner's buffer and timing code run for real in tests; it says nothing about a GPU. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct { double ms; } event_t;
static int streams;

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

int cudaGetDeviceCount(int *count) { *count = 1; return 0; }
const char *cudaGetErrorString(int code) { return code ? "stand-in error" : "no error"; }
int cudaMalloc(void **ptr, size_t size) { *ptr = malloc(size); return *ptr ? 0 : 2; }
int cudaFree(void *ptr) { free(ptr); return 0; }
int cudaMemcpyAsync(void *dst, const void *src, size_t n, int kind, void *stream) {
    (void)kind; (void)stream; memcpy(dst, src, n); return 0;
}
int cudaStreamCreate(void **stream) { *stream = (void *)(size_t)(++streams); return 0; }
int cudaStreamSynchronize(void *stream) { (void)stream; return 0; }
int cudaEventCreate(void **event) { *event = calloc(1, sizeof(event_t)); return *event ? 0 : 2; }
int cudaEventRecord(void *event, void *stream) { (void)stream; ((event_t *)event)->ms = now_ms(); return 0; }
int cudaEventSynchronize(void *event) { (void)event; return 0; }
int cudaEventElapsedTime(float *ms, void *start, void *end) {
    *ms = (float)(((event_t *)end)->ms - ((event_t *)start)->ms); return 0;
}

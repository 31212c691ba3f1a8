"""{{name}}: C = A + B on the GPU (CUDA sample vectorAdd, the 2012 study's VecAdd), the same
measurement as Passage's Rust vector-add: kernel time by CUDA events after a gate kernel that holds
the stream, so that the events time the device rather than how fast Python submits work."""

import random

import wit_world
from passage_plugin import (
    bytes_f32, f32_bytes, gpu, param, plugin_run, report, report_summary, report_verification,
    summarize,
)

KERNELS = r"""
extern "C" __global__ void vector_add(const float *A, const float *B, float *C, int numElements) {
    int i = blockDim.x * blockIdx.x + threadIdx.x;
    if (i < numElements) {
        C[i] = A[i] + B[i];
    }
}

// Holds a stream for `cycles` clock cycles, so that the work queued behind it starts back to back.
extern "C" __global__ void passage_gate(long long cycles) {
    long long start = clock64();
    while (clock64() - start < cycles) {
    }
}
"""
# How long the gate holds the stream before each sample: longer than Python takes to queue one.
GATE_US = 1000


class WitWorld(wit_world.WitWorld):
    def describe(self):
        return wit_world.PluginInfo(
            name="{{name}}",
            version="0.1.0",
            summary="Adds two float vectors on the GPU (CUDA sample vectorAdd) from Python. Reports "
            "kernel time (CUDA events, median of repetitions) and effective bandwidth (3 x 4 bytes "
            "per element), and checks every element against the CPU (tolerance 1e-5).",
            params=[
                param("elements", "Vector length", 50_000, 1, 16_777_216, "floats"),
                param("block", "Threads per block", 256, 32, 1024, "threads"),
                param("warmup", "Untimed runs of the measured work first", 3, 0, 1000, "runs"),
                param("repetitions", "Timed samples; figures are their median, with min and max", 100, 1, 10_000, "samples"),
            ],
        )

    @plugin_run
    def run(self, params):
        n, block = params["elements"], params["block"]
        device = gpu.device()
        report.log(report.Level.INFO, f"[Vector addition of {n} elements] on {device.name}")
        rng = random.Random(0x5EED)
        a = [rng.random() for _ in range(n)]
        b = [rng.random() for _ in range(n)]
        d_a, d_b, d_c = (gpu.Buffer.alloc(n * 4) for _ in range(3))
        d_a.write(0, f32_bytes(a))
        d_b.write(0, f32_bytes(b))

        module = gpu.Module.compile("vector_add.cu", KERNELS)
        kernel, gate = module.kernel("vector_add"), module.kernel("passage_gate")
        stream = gpu.Stream.create()
        start, end = gpu.Event.create(), gpu.Event.create()
        config = gpu.LaunchConfig((n + block - 1) // block, 1, 1, block, 1, 1, 0)
        args = [gpu.KernelArg_Buffer(d_a), gpu.KernelArg_Buffer(d_b), gpu.KernelArg_Buffer(d_c), gpu.KernelArg_S32(n)]
        gate_args = [gpu.KernelArg_S64(device.clock_khz * GATE_US // 1000)]
        one = gpu.LaunchConfig(1, 1, 1, 1, 1, 1, 0)

        for _ in range(params["warmup"]):
            kernel.launch(config, args, stream)
        stream.synchronize()
        times = []
        for _ in range(params["repetitions"]):
            gate.launch(one, gate_args, stream)
            start.record(stream)
            kernel.launch(config, args, stream)
            end.record(stream)
            end.synchronize()
            times.append(end.elapsed_ms(start))

        median, low, high = summarize(times)
        report_summary("kernel time", "ms", (median, low, high))
        moved = 3.0 * n * 4
        rate = lambda ms: moved / (ms * 1e-3) / 1e9 if ms > 0 else 0.0
        report_summary("effective bandwidth", "GB/s", (rate(median), rate(high), rate(low)))
        report.metric("elements", float(n), "floats")
        report.metric("threads per block", float(block), "threads")

        if device.simulated:
            report_verification(None)
            return
        c = bytes_f32(d_c.read(0, n * 4))
        a32, b32 = bytes_f32(f32_bytes(a)), bytes_f32(f32_bytes(b))
        wrong = sum(1 for x, y, z in zip(a32, b32, c) if not abs(x + y - z) <= 1e-5)
        if wrong:
            report.log(report.Level.ERROR, f"{wrong} of {n} elements differ from the CPU result")
        report_verification(wrong == 0)

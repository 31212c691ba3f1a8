"""{{name}}: multiplies a vector by a factor on the GPU, times the kernel with CUDA events and
checks the result on the CPU."""

import wit_world
from passage_plugin import (
    bytes_f32, f32_bytes, gpu, launch_1d, param, plugin_run, report, report_summary,
    report_verification, summarize, time_ms,
)

# The kernel, in CUDA C. `extern "C"` keeps its name findable.
KERNEL = r"""
extern "C" __global__ void scale(float *x, float factor, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        x[i] = x[i] * factor;
    }
}
"""


class WitWorld(wit_world.WitWorld):
    def describe(self):
        return wit_world.PluginInfo(
            name="{{name}}",
            version="0.1.0",
            summary="Multiplies a vector by a factor on the GPU.",
            params=[
                param("elements", "Vector length", 1 << 20, 1, 1 << 24, "floats"),
                param("factor", "Multiplier", 2.0),
            ],
        )

    @plugin_run
    def run(self, params):
        n, factor = params["elements"], params["factor"]
        data = [float(i) for i in range(n)]
        x = gpu.Buffer.alloc(n * 4)
        x.write(0, f32_bytes(data))

        kernel = gpu.Module.compile("scale.cu", KERNEL).kernel("scale")
        stream = gpu.Stream.create()
        args = [gpu.KernelArg_Buffer(x), gpu.KernelArg_F32(factor), gpu.KernelArg_S32(n)]
        ms = time_ms(stream, lambda: kernel.launch(launch_1d(n), args, stream))
        report_summary("kernel time", "ms", summarize([ms]))

        if gpu.device().simulated:
            report_verification(None)
        else:
            out = bytes_f32(x.read(0, n * 4))
            report_verification(all(abs(o - i * factor) <= 1e-5 * max(abs(i), 1.0) for o, i in zip(out, data)))
        report.log(report.Level.INFO, f"scaled {n} floats by {factor}")

// {{name}}: multiplies a vector by a factor on the GPU, times the kernel with CUDA events and
// checks the result on the CPU.
import { Buffer, Module, Stream, device } from 'passage:plugin/gpu@0.1.0';
import { log } from 'passage:plugin/report@0.1.0';
import {
  bytesF32, f32Bytes, launch1d, param, pluginRun, reportSummary, reportVerification, summarize, timeMs,
} from './passage.js';

// The kernel, in CUDA C. `extern "C"` keeps its name findable.
const KERNEL = `
extern "C" __global__ void scale(float *x, float factor, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        x[i] = x[i] * factor;
    }
}
`;

export function describe() {
  return {
    name: '{{name}}',
    version: '0.1.0',
    summary: 'Multiplies a vector by a factor on the GPU.',
    params: [
      param('elements', 'Vector length', 1048576n, { min: 1, max: 16777216, unit: 'floats' }),
      param('factor', 'Multiplier', 2.0),
    ],
  };
}

export const run = pluginRun(({ elements: n, factor }) => {
  const data = Float32Array.from({ length: n }, (_, i) => i);
  const x = Buffer.alloc(BigInt(n * 4));
  x.write(0n, f32Bytes(data));

  const kernel = Module.compile('scale.cu', KERNEL).kernel('scale');
  const stream = Stream.create();
  const args = [{ tag: 'buffer', val: x }, { tag: 'f32', val: factor }, { tag: 's32', val: n }];
  const ms = timeMs(stream, () => kernel.launch(launch1d(n), args, stream));
  reportSummary('kernel time', 'ms', summarize([ms]));

  if (device().simulated) {
    reportVerification(null);
  } else {
    const out = bytesF32(x.read(0n, BigInt(n * 4)));
    const f = Math.fround(factor);
    reportVerification(out.every((o, i) => Math.abs(o - Math.fround(data[i] * f)) <= 1e-5 * Math.max(Math.abs(data[i]), 1)));
  }
  log('info', `scaled ${n} floats by ${factor}`);
});

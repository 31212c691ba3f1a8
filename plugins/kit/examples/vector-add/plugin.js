// {{name}}: C = A + B on the GPU (CUDA sample vectorAdd, the 2012 study's VecAdd), the same
// measurement as Passage's Rust vector-add: kernel time by CUDA events after a gate kernel that
// holds the stream, so that the events time the device rather than how fast JavaScript submits.
import { Buffer, Event, Module, Stream, device } from 'passage:plugin/gpu@0.1.0';
import { log, metric } from 'passage:plugin/report@0.1.0';
import { bytesF32, f32Bytes, param, pluginRun, reportSummary, reportVerification, summarize } from './passage.js';

const KERNELS = `
extern "C" __global__ void vector_add(const float *A, const float *B, float *C, int numElements) {
    int i = blockDim.x * blockIdx.x + threadIdx.x;
    if (i < numElements) {
        C[i] = A[i] + B[i];
    }
}

// Holds a stream for \`cycles\` clock cycles, so that the work queued behind it starts back to back.
extern "C" __global__ void passage_gate(long long cycles) {
    long long start = clock64();
    while (clock64() - start < cycles) {
    }
}
`;
// How long the gate holds the stream before each sample: longer than a launch takes to queue.
const GATE_US = 1000;

export function describe() {
  return {
    name: '{{name}}',
    version: '0.1.0',
    summary: 'Adds two float vectors on the GPU (CUDA sample vectorAdd) from JavaScript. Reports kernel time ' +
      '(CUDA events, median of repetitions) and effective bandwidth (3 x 4 bytes per element), and checks ' +
      'every element against the CPU (tolerance 1e-5).',
    params: [
      param('elements', 'Vector length', 50000n, { min: 1, max: 16777216, unit: 'floats' }),
      param('block', 'Threads per block', 256n, { min: 32, max: 1024, unit: 'threads' }),
      param('warmup', 'Untimed runs of the measured work first', 3n, { min: 0, max: 1000, unit: 'runs' }),
      param('repetitions', 'Timed samples; figures are their median, with min and max', 100n, { min: 1, max: 10000, unit: 'samples' }),
    ],
  };
}

/** A small deterministic generator of floats in [0, 1). */
function generator(seed) {
  let state = seed >>> 0;
  return () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state / 4294967296;
  };
}

export const run = pluginRun(({ elements: n, block, warmup, repetitions }) => {
  const info = device();
  log('info', `[Vector addition of ${n} elements] on ${info.name}`);
  const next = generator(0x5eed);
  const a = Float32Array.from({ length: n }, next);
  const b = Float32Array.from({ length: n }, next);
  const bytes = BigInt(n * 4);
  const [dA, dB, dC] = [Buffer.alloc(bytes), Buffer.alloc(bytes), Buffer.alloc(bytes)];
  dA.write(0n, f32Bytes(a));
  dB.write(0n, f32Bytes(b));

  const module = Module.compile('vector_add.cu', KERNELS);
  const kernel = module.kernel('vector_add');
  const gate = module.kernel('passage_gate');
  const stream = Stream.create();
  const [start, end] = [Event.create(), Event.create()];
  const config = { gridX: Math.ceil(n / block), gridY: 1, gridZ: 1, blockX: block, blockY: 1, blockZ: 1, sharedMemBytes: 0 };
  const args = [{ tag: 'buffer', val: dA }, { tag: 'buffer', val: dB }, { tag: 'buffer', val: dC }, { tag: 's32', val: n }];
  const gateArgs = [{ tag: 's64', val: BigInt(Math.floor(info.clockKhz * GATE_US / 1000)) }];
  const one = { gridX: 1, gridY: 1, gridZ: 1, blockX: 1, blockY: 1, blockZ: 1, sharedMemBytes: 0 };

  for (let i = 0; i < warmup; i++) kernel.launch(config, args, stream);
  stream.synchronize();
  const times = [];
  for (let i = 0; i < repetitions; i++) {
    gate.launch(one, gateArgs, stream);
    start.record(stream);
    kernel.launch(config, args, stream);
    end.record(stream);
    end.synchronize();
    times.push(end.elapsedMs(start));
  }

  const [median, low, high] = summarize(times);
  reportSummary('kernel time', 'ms', [median, low, high]);
  const moved = 3 * n * 4;
  const rate = (ms) => (ms > 0 ? moved / (ms * 1e-3) / 1e9 : 0);
  reportSummary('effective bandwidth', 'GB/s', [rate(median), rate(high), rate(low)]);
  metric('elements', n, 'floats');
  metric('threads per block', block, 'threads');

  if (info.simulated) {
    reportVerification(null);
    return;
  }
  const c = bytesF32(dC.read(0n, bytes));
  let wrong = 0;
  for (let i = 0; i < n; i++) {
    if (!(Math.abs(a[i] + b[i] - c[i]) <= 1e-5)) wrong++;
  }
  if (wrong) log('error', `${wrong} of ${n} elements differ from the CPU result`);
  reportVerification(wrong === 0);
});

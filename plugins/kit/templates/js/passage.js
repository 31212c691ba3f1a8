// Helpers for Passage plugins in JavaScript: parameters, launches, timing with CUDA events,
// statistics and the verification verdict, over the contract's imports.
import { Event } from 'passage:plugin/gpu@0.1.0';
import { log, metric } from 'passage:plugin/report@0.1.0';

/** A parameter's description; its kind follows the default (a BigInt is an integer). */
export function param(name, summary, defaultValue, { min, max, unit = '' } = {}) {
  const kinds = { bigint: 'integer', number: 'float', boolean: 'boolean', string: 'text' };
  const kind = kinds[typeof defaultValue];
  if (!kind) throw new Error(`parameter ${name}: unsupported default ${defaultValue}`);
  return { name, summary, kind, default: { tag: kind, val: defaultValue }, min, max, unit };
}

/** The run's parameters by name: integers as Numbers (exact up to 2^53), the rest as given. */
export function params(list) {
  const values = {};
  for (const { name, value } of list) {
    values[name] = value.tag === 'integer' ? Number(value.val) : value.val;
  }
  return values;
}

/** Wraps `run`: a GPU error or an exception becomes the run's error message, in words. */
export function pluginRun(body) {
  return (list) => {
    try {
      body(params(list));
    } catch (e) {
      const payload = e && e.payload !== undefined ? e.payload : e;
      if (payload && payload.tag !== undefined) throw `${payload.tag}: ${payload.val}`;
      throw String(e && e.stack ? e.stack : payload);
    }
  };
}

/** Floats as the bytes of a float32 array. */
export function f32Bytes(values) {
  return new Uint8Array(Float32Array.from(values).buffer);
}

/** The float32 values in `bytes`. */
export function bytesF32(bytes) {
  return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
}

/** A one-dimensional launch of `n` threads in blocks of `block`. */
export function launch1d(n, block = 256) {
  return { gridX: Math.ceil(n / block), gridY: 1, gridZ: 1, blockX: block, blockY: 1, blockZ: 1, sharedMemBytes: 0 };
}

/** Milliseconds of device time of the work `work()` queues on `stream`, by CUDA events. */
export function timeMs(stream, work) {
  const start = Event.create();
  const end = Event.create();
  start.record(stream);
  work();
  end.record(stream);
  end.synchronize();
  return end.elapsedMs(start);
}

/** [median, min, max] of the samples. */
export function summarize(samples) {
  const s = [...samples].sort((a, b) => a - b);
  if (s.length === 0) return [0, 0, 0];
  const mid = s.length >> 1;
  const median = s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
  return [median, s[0], s[s.length - 1]];
}

/** Reports a summary as `name` (the median), `name min` and `name max`. */
export function reportSummary(name, unit, [median, min, max]) {
  metric(name, median, unit);
  metric(`${name} min`, min, unit);
  metric(`${name} max`, max, unit);
}

/** Reports the verdict: true PASS, false FAIL, null skipped (nothing real to check). */
export function reportVerification(passed) {
  const [value, word] = passed === null ? [-1, 'SKIPPED'] : passed ? [1, 'PASS'] : [0, 'FAIL'];
  metric('verification', value, '1=pass 0=fail -1=skipped');
  log(passed === false ? 'error' : 'info', `verification: ${word}`);
}

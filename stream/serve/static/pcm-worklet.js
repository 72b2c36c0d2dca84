// Microphone samples (float, the AudioContext's rate) -> 16-bit little-endian PCM messages of `samples` frames
// (100 ms: the chunk the server's ingest coalesces to anyway), posted to the page, which sends them as they are.
class Pcm16 extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.size = options.processorOptions.samples;
    this.buf = new Int16Array(this.size);
    this.n = 0;
  }
  process(inputs) {
    const ch = inputs[0] && inputs[0][0];
    if (!ch) return true;
    for (let i = 0; i < ch.length; i++) {
      const x = Math.max(-1, Math.min(1, ch[i]));
      this.buf[this.n++] = x < 0 ? x * 32768 : x * 32767;
      if (this.n === this.size) {
        this.port.postMessage(this.buf.buffer, [this.buf.buffer]);
        this.buf = new Int16Array(this.size);
        this.n = 0;
      }
    }
    return true;
  }
}
registerProcessor("pcm16", Pcm16);

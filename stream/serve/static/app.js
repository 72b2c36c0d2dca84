// The page's client of the server's Vosk protocol: config with the AudioContext's rate, PCM16 messages from
// an AudioWorklet, {"eof" : 1} on stop. The partial is redrawn in place; each result is kept with its times.
"use strict";
const $ = (id) => document.getElementById(id);
const token = new URLSearchParams(location.search).get("token");
let ctx = null, media = null, ws = null, node = null;

function status(text) { $("status").textContent = text; document.body.dataset.state = text; }

function clock(s) {
  const m = Math.floor(s / 60), r = (s - 60 * m).toFixed(2).padStart(5, "0");
  return `${m}:${r}`;
}

function show(msg) {
  if ("error" in msg) { status("error: " + msg.error); return; }
  if ("partial" in msg) { $("partial").textContent = msg.partial; return; }
  if ("text" in msg) {
    $("partial").textContent = "";
    if (!msg.text) return;
    const words = msg.result || [];
    const li = document.createElement("li");
    const t = document.createElement("span");
    t.className = "t";
    t.textContent = words.length ? `${clock(words[0].start)} – ${clock(words[words.length - 1].end)}` : "";
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = msg.text;
    li.append(t, text);
    $("finals").append(li);
  }
}

async function start() {
  status("starting");
  media = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
  });
  ctx = new AudioContext();
  await ctx.audioWorklet.addModule("pcm-worklet.js");
  const url = new URL("/", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  if (token) url.searchParams.set("token", token);
  ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  ws.onmessage = (e) => show(JSON.parse(e.data));
  ws.onclose = (e) => { cleanup(); status(e.code === 1000 ? "idle" : `closed ${e.code} ${e.reason}`); };
  await new Promise((ok, fail) => { ws.onopen = ok; ws.onerror = fail; });
  ws.send(JSON.stringify({ config: { sample_rate: ctx.sampleRate, words: true } }));
  node = new AudioWorkletNode(ctx, "pcm16", { processorOptions: { samples: Math.round(ctx.sampleRate / 10) } });
  node.port.onmessage = (e) => { if (ws && ws.readyState === WebSocket.OPEN) ws.send(e.data); };
  const mute = ctx.createGain();
  mute.gain.value = 0; // the graph must reach the destination for the worklet to run; nothing is heard
  ctx.createMediaStreamSource(media).connect(node).connect(mute).connect(ctx.destination);
  $("mic").textContent = "Stop";
  $("mic").classList.add("on");
  status(`listening at ${ctx.sampleRate} Hz`);
}

function release() {
  if (media) media.getTracks().forEach((t) => t.stop());
  if (ctx) ctx.close();
  media = ctx = node = null;
}

function stop() {
  // The worklet may still hold a block posted before the stop: once eof is sent, audio would be "input after
  // eof" (1003), so nothing more of it is sent.
  if (node) node.port.onmessage = null;
  if (ws && ws.readyState === WebSocket.OPEN) ws.send('{"eof" : 1}'); // the server answers the last result, then closes
  status("finishing");
  release();
}

function cleanup() {
  release();
  ws = null;
  $("mic").textContent = "Start microphone";
  $("mic").classList.remove("on");
}

$("mic").addEventListener("click", () => {
  if (ws) stop();
  else start().catch((e) => { status("error: " + e); cleanup(); });
});
status("idle");
fetch("models" + location.search).then((r) => r.json()).then((m) => { // the token, if any, is in the query
  // a pen model alone: no microphone
  if (!m.audio) { $("mic").disabled = true; status("no speech model on this server"); }
}).catch(() => {});

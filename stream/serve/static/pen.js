// The page's pen client: strokes drawn on the canvas go to the server's pen model as JSON points
// {"x", "y", "t", "pen"} (canvas pixels, y down, seconds since the first point), a list per message every 50 ms.
// While the pen is up, a pen-up point every 250 ms (for 3 s) lets ink time pass, so the server's endpoint (the pen
// up 1.2 s) ends the line and its result comes back without waiting for more ink. The partial is redrawn in place;
// each line read is kept. Every point sent is kept in `window.penSent` (what the tests read back).
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const token = new URLSearchParams(location.search).get("token");
  const pad = $("pad"), ink = pad.getContext("2d");
  const SEND_MS = 50, IDLE_MS = 250, IDLE_FOR_MS = 3000;
  let path = null, ws = null, open = null, t0 = null, queue = [], last = null, down = false, liftedAt = null;
  window.penSent = [];

  function status(text) { $("pen-status").textContent = text; pad.dataset.state = text; }

  function show(msg) {
    if ("error" in msg) { status("error: " + msg.error); return; }
    if ("partial" in msg) { $("pen-partial").textContent = msg.partial; return; }
    if ("text" in msg) {
      $("pen-partial").textContent = "";
      if (!msg.text) return;
      const li = document.createElement("li");
      li.textContent = msg.text;
      $("pen-finals").append(li);
    }
  }

  function forget() { // the stream is over (eof sent, or closed): the next stroke starts a new one, times from 0
    ws = open = t0 = null;
    queue = [];
    liftedAt = null;
  }

  function connect() {
    const url = new URL(path, location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    if (token) url.searchParams.set("token", token);
    const s = new WebSocket(url);
    s.onmessage = (e) => show(JSON.parse(e.data));
    s.onclose = (e) => {
      if (ws === s) forget();
      status(e.code === 1000 || e.code === 1001 ? "idle" : `closed ${e.code} ${e.reason}`);
    };
    ws = s;
    open = new Promise((ok, fail) => { s.onopen = ok; s.onerror = fail; });
    status("writing");
  }

  function point(x, y, stamp, pen) {
    if (t0 === null) t0 = stamp;
    const p = { x: Math.round(x * 10) / 10, y: Math.round(y * 10) / 10, t: Math.round(stamp - t0) / 1000, pen };
    queue.push(p);
    last = p;
  }

  async function flush() {
    if (!queue.length || !ws) return;
    const s = ws, batch = queue;
    queue = [];
    await open;
    if (s.readyState === WebSocket.OPEN) {
      s.send(JSON.stringify(batch));
      window.penSent.push(...batch);
    }
  }

  function tick() {
    const now = performance.now();
    if (!down && liftedAt !== null && last && t0 !== null && now - (t0 + 1000 * last.t) >= IDLE_MS) {
      if (now - liftedAt <= IDLE_FOR_MS) point(last.x, last.y, now, "up");
      else liftedAt = null;
    }
    flush().catch((e) => status("error: " + e));
  }

  function xy(e) { return [e.offsetX, e.offsetY]; }

  pad.addEventListener("pointerdown", (e) => {
    if (!path) return;
    e.preventDefault();
    pad.setPointerCapture(e.pointerId);
    if (!ws) connect();
    down = true;
    liftedAt = null;
    const [x, y] = xy(e);
    point(x, y, e.timeStamp, "down");
    ink.beginPath();
    ink.moveTo(x, y);
  });
  pad.addEventListener("pointermove", (e) => {
    if (!down) return;
    for (const c of e.getCoalescedEvents ? e.getCoalescedEvents() : [e]) {
      const [x, y] = xy(c);
      point(x, y, c.timeStamp, "down");
      ink.lineTo(x, y);
    }
    ink.stroke();
  });
  const lift = (e) => {
    if (!down) return;
    down = false;
    const [x, y] = xy(e);
    point(x, y, e.timeStamp, "up");
    liftedAt = performance.now();
  };
  pad.addEventListener("pointerup", lift);
  pad.addEventListener("pointercancel", lift);

  $("pen-done").addEventListener("click", () => {
    if (!ws) return;
    const s = ws;
    flush().then(() => {
      if (s.readyState === WebSocket.OPEN) s.send('{"eof" : 1}'); // the last result, then the close
      if (ws === s) forget(); // a stroke from now on is a new stream
      ink.clearRect(0, 0, pad.width, pad.height);
      status("finishing");
    });
  });

  pad.width = pad.clientWidth; // drawing in CSS pixels, as the pointer events give them
  pad.height = pad.clientHeight;
  ink.lineWidth = 3;
  ink.lineCap = ink.lineJoin = "round";
  setInterval(tick, SEND_MS);
  fetch("models" + location.search).then((r) => r.json()).then((m) => { // the token, if any, is in the query
    path = m.pen;
    status(path ? "idle: write here" : "no pen model on this server (rnnstream serve --pen-model handwriting)");
  }).catch((e) => status("error: " + e));
})();

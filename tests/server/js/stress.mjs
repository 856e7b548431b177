// The server under a crowd and under hostile clients, on loopback (tests/server/load.sh starts
// the server and checks /metrics and memory afterwards). Phases, with /health polled every
// 100 ms on its own keep-alive connection throughout:
//   1. 256 concurrent streaming completions; every third client disconnects after 2 chunks.
//   2. 32 non-streaming completions of 1500 tokens whose clients leave after 300 ms: the
//      server must cancel them (the tokens generated stay far below 32 x 1500).
//   3. 60 slow clients (one header byte every 400 ms) and 60 idle connections: the server
//      must drop them at its request deadline, and keep serving.
//   4. A connection flood past --max-connections: the extra ones get a 503, none hangs.
// Every request must be answered or refused with a clear status. Prints a summary line per
// phase and exits 1 on any failure.
// Usage: node stress.mjs BASE_URL API_KEY MODEL MAX_CONNECTIONS REQUEST_TIMEOUT_S
import net from "node:net";

const [baseURL, apiKey, model, maxConnArg, timeoutArg] = process.argv.slice(2);
const maxConnections = Number(maxConnArg);
const requestTimeout = Number(timeoutArg);
const headers = { "Content-Type": "application/json", Authorization: `Bearer ${apiKey}` };
const { hostname, port } = new URL(baseURL);
let failures = 0;
const fail = (msg) => {
  failures++;
  console.log(`FAIL ${msg}`);
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function metric(name) {
  const text = await (await fetch(`${baseURL.replace(/\/v1$/, "")}/metrics`)).text();
  const m = text.match(new RegExp(`^${name} ([0-9.e+]+)$`, "m"));
  return m ? Number(m[1]) : NaN;
}

// /health on one keep-alive connection, every 100 ms, until stopped.
const health = { polls: 0, bad: 0, worst: 0, stop: false };
const healthLoop = (async () => {
  while (!health.stop) {
    const t0 = performance.now();
    try {
      const res = await fetch(`${baseURL.replace(/\/v1$/, "")}/health`, { signal: AbortSignal.timeout(5000) });
      await res.text();
      if (res.status !== 200) health.bad++;
    } catch {
      health.bad++;
    }
    health.worst = Math.max(health.worst, performance.now() - t0);
    health.polls++;
    await sleep(100);
  }
})();

async function streaming(i) {
  const abort = new AbortController();
  const disconnect = i % 3 === 0;
  const res = await fetch(`${baseURL}/completions`, {
    method: "POST",
    headers,
    signal: abort.signal,
    body: JSON.stringify({ model, prompt: `Request ${i}: once upon a time`, max_tokens: 24, temperature: 0.8, seed: i,
                           stream: true, ignore_eos: true }),
  });
  if (res.status !== 200) return `status ${res.status}`;
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let text = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      text += decoder.decode(value, { stream: true });
      if (disconnect && (text.match(/^data: /gm) || []).length >= 2) {
        abort.abort();
        return "disconnected";
      }
    }
  } catch (e) {
    return disconnect ? "disconnected" : `error ${e}`;
  }
  return text.includes("data: [DONE]") ? "complete" : "no [DONE]";
}

async function phase1() {
  const results = await Promise.all(Array.from({ length: 256 }, (_, i) => streaming(i).catch((e) => `error ${e}`)));
  const complete = results.filter((r) => r === "complete").length;
  const dropped = results.filter((r) => r === "disconnected").length;
  console.log(`phase 1: 256 streams: complete ${complete}, disconnected ${dropped}`);
  for (const r of results) if (r !== "complete" && r !== "disconnected") fail(`phase 1: ${r}`);
  if (complete !== 170 || dropped !== 86) fail("phase 1: expected 170 complete and 86 disconnected");
}

async function phase2() {
  const before = await metric("fp6serve_generation_tokens_total");
  const leave = Array.from({ length: 32 }, async (_, i) => {
    const res = fetch(`${baseURL}/completions`, {
      method: "POST",
      headers,
      signal: AbortSignal.timeout(300),
      body: JSON.stringify({ model, prompt: `Leaving ${i}`, max_tokens: 1500, ignore_eos: true }),
    });
    try {
      await res;
      return "answered";
    } catch {
      return "left";
    }
  });
  const results = await Promise.all(leave);
  // Wait for the engine to notice and drain.
  for (let t = 0; t < 100 && (await metric("fp6serve_requests_in_flight")) > 0; t++) await sleep(100);
  const generated = (await metric("fp6serve_generation_tokens_total")) - before;
  console.log(`phase 2: 32 clients left after 300 ms: ${results.filter((r) => r === "left").length} left, ` +
              `${generated} tokens generated of the 48000 asked for`);
  if (!(generated < 12000)) fail(`phase 2: ${generated} tokens generated for clients that had left`);
  if ((await metric("fp6serve_requests_in_flight")) !== 0) fail("phase 2: requests still in flight");
}

function slowClient(i) {
  return new Promise((resolve) => {
    const s = net.connect(Number(port), hostname);
    const request = `POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${apiKey}\r\nX-Slow: ${i}\r\n`;
    let sent = 0;
    const t0 = performance.now();
    const timer = setInterval(() => {
      if (sent < request.length && !s.destroyed) s.write(request[sent++]);
    }, 400);
    let answer = "";
    s.on("data", (d) => (answer += d));
    s.on("error", () => {});
    s.on("close", () => {
      clearInterval(timer);
      resolve({ seconds: (performance.now() - t0) / 1000, answer });
    });
  });
}

function idleClient() {
  return new Promise((resolve) => {
    const s = net.connect(Number(port), hostname);
    const t0 = performance.now();
    s.on("error", () => {});
    s.on("close", () => resolve((performance.now() - t0) / 1000));
  });
}

async function phase3() {
  const slow = Array.from({ length: 60 }, (_, i) => slowClient(i));
  const idle = Array.from({ length: 60 }, () => idleClient());
  // Meanwhile ordinary requests are still served.
  await sleep(1000);
  const r = await fetch(`${baseURL}/completions`, {
    method: "POST",
    headers,
    body: JSON.stringify({ model, prompt: "still here?", max_tokens: 4 }),
  });
  if (r.status !== 200) fail(`phase 3: a normal request during the slow clients got ${r.status}`);
  const slowDone = await Promise.all(slow);
  const idleDone = await Promise.all(idle);
  const worst = Math.max(...slowDone.map((d) => d.seconds), ...idleDone);
  console.log(`phase 3: 60 slow and 60 idle clients dropped after at most ${worst.toFixed(1)} s ` +
              `(deadline ${requestTimeout} s)`);
  if (!(worst < requestTimeout + 2)) fail(`phase 3: a slow client held its connection ${worst.toFixed(1)} s`);
}

async function phase4() {
  const extra = maxConnections + 100;
  const sockets = await Promise.all(Array.from({ length: extra }, () => new Promise((resolve) => {
    const s = net.connect(Number(port), hostname);
    let answer = "";
    s.on("data", (d) => (answer += d));
    s.on("error", () => resolve({ s, answer, error: true }));
    s.on("connect", () => setTimeout(() => resolve({ s, answer, get text() { return answer; } }), 500));
  })));
  await sleep(500);
  const refused = sockets.filter((x) => x.answer.startsWith("HTTP/1.1 503")).length;
  console.log(`phase 4: ${extra} connections at once past the limit of ${maxConnections}: ${refused} answered 503`);
  if (refused < 90) fail(`phase 4: only ${refused} of the connections past the limit were refused with 503`);
  for (const x of sockets) x.s.destroy();
}

try {
  await phase1();
  await phase2();
  await phase3();
  await phase4();
} catch (e) {
  fail(`exception: ${e.stack || e}`);
}
health.stop = true;
await healthLoop;
console.log(`/health: ${health.polls} polls, ${health.bad} not 200, slowest ${health.worst.toFixed(0)} ms`);
if (health.bad > 0 || health.polls < 20) fail("/health was not answered throughout");
process.exitCode = failures ? 1 : 0;

// 64 concurrent streaming requests; every third one disconnects after its first chunks.
// Usage: node load.mjs BASE_URL API_KEY MODEL
const [baseURL, apiKey, model] = process.argv.slice(2);
const headers = { "Content-Type": "application/json", Authorization: `Bearer ${apiKey}` };

async function one(i) {
  const abort = new AbortController();
  const disconnect = i % 3 === 0;
  const res = await fetch(`${baseURL}/completions`, {
    method: "POST",
    headers,
    signal: abort.signal,
    body: JSON.stringify({ model, prompt: `Request ${i}: once upon a time`, max_tokens: 48, temperature: 0.8, seed: i, stream: true, ignore_eos: true }),
  });
  if (res.status !== 200) throw new Error(`request ${i}: HTTP ${res.status}`);
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let text = "";
  let chunks = 0;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      text += decoder.decode(value, { stream: true });
      chunks += (decoder.decode(value).match(/^data: /gm) || []).length;
      if (disconnect && chunks >= 3) {
        abort.abort();
        return "disconnected";
      }
    }
  } catch (e) {
    if (disconnect) return "disconnected";
    throw e;
  }
  if (!text.includes("data: [DONE]")) throw new Error(`request ${i}: no [DONE]`);
  return "complete";
}

const results = await Promise.allSettled(Array.from({ length: 64 }, (_, i) => one(i)));
const failed = results.filter((r) => r.status === "rejected");
const complete = results.filter((r) => r.value === "complete").length;
const dropped = results.filter((r) => r.value === "disconnected").length;
console.log(`complete ${complete}, disconnected ${dropped}, failed ${failed.length}`);
for (const f of failed) console.log(`FAIL ${f.reason}`);
if (failed.length || complete !== 42 || dropped !== 22) process.exitCode = 1;

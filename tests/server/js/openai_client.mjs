// The official openai SDK against a running fp6serve: completions and chat, streaming and not.
// Usage: node openai_client.mjs BASE_URL API_KEY MODEL
import OpenAI from "openai";
import assert from "node:assert/strict";

const [baseURL, apiKey, model] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });

async function check(name, fn) {
  try {
    await fn();
    console.log(`ok   ${name}`);
  } catch (e) {
    console.log(`FAIL ${name}: ${e.stack || e}`);
    process.exitCode = 1;
  }
}

await check("models.list", async () => {
  const models = await client.models.list();
  assert.equal(models.data[0].id, model);
});

await check("completions, greedy, usage", async () => {
  const r = await client.completions.create({ model, prompt: "The capital of France is", max_tokens: 12, temperature: 0 });
  assert.equal(r.object, "text_completion");
  assert.equal(r.choices.length, 1);
  assert.ok(["stop", "length"].includes(r.choices[0].finish_reason));
  assert.equal(typeof r.choices[0].text, "string");
  assert.ok(r.usage.prompt_tokens > 0);
  assert.ok(r.usage.completion_tokens > 0 && r.usage.completion_tokens <= 12);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
  // Greedy is deterministic.
  const again = await client.completions.create({ model, prompt: "The capital of France is", max_tokens: 12, temperature: 0 });
  assert.equal(again.choices[0].text, r.choices[0].text);
});

await check("completions, n=3 with seed, logprobs", async () => {
  const r = await client.completions.create({ model, prompt: "Once upon", max_tokens: 8, temperature: 1.0, n: 3, seed: 7, logprobs: 2 });
  assert.equal(r.choices.length, 3);
  for (const c of r.choices) {
    assert.equal(c.logprobs.tokens.length, c.logprobs.token_logprobs.length);
    for (const lp of c.logprobs.token_logprobs) assert.ok(lp <= 0);
  }
});

await check("completions, a list of prompts: one choice per prompt and n, indexed prompt-major", async () => {
  const prompts = ["The capital of France is", "Once upon a time there was"];
  const one = await Promise.all(prompts.map((p) => client.completions.create({ model, prompt: p, max_tokens: 1 })));
  const body = { model, prompt: prompts, max_tokens: 5, temperature: 0, n: 2, ignore_eos: true };
  const r = await client.completions.create(body);
  assert.deepEqual(r.choices.map((c) => c.index), [0, 1, 2, 3]);
  for (const c of r.choices) assert.equal(c.finish_reason, "length");
  // Choices 2k and 2k+1 answer prompt k (greedy: the same text); each prompt counted once.
  assert.equal(r.choices[0].text, r.choices[1].text);
  assert.equal(r.choices[2].text, r.choices[3].text);
  assert.equal(r.usage.prompt_tokens, one[0].usage.prompt_tokens + one[1].usage.prompt_tokens);
  assert.equal(r.usage.completion_tokens, 4 * 5);
  // Streaming: every chunk names its choice; each index ends once; the usage chunk totals.
  const stream = await client.completions.create({ ...body, stream: true, stream_options: { include_usage: true } });
  const texts = ["", "", "", ""];
  const finished = [0, 0, 0, 0];
  let usage = null;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      assert.ok(c.index >= 0 && c.index < 4, `index ${c.index}`);
      texts[c.index] += c.text;
      if (c.finish_reason) finished[c.index] += 1;
    }
  }
  assert.deepEqual(finished, [1, 1, 1, 1]);
  assert.equal(texts[0], texts[1]);
  assert.equal(texts[2], texts[3]);
  assert.deepEqual(usage, r.usage);
  // Token-id prompts, and logprobs per choice.
  const ids = await client.completions.create({ model, prompt: [[1019, 895, 220], [1019, 530]], max_tokens: 3, logprobs: 1, ignore_eos: true });
  assert.deepEqual(ids.choices.map((c) => c.index), [0, 1]);
  assert.equal(ids.usage.prompt_tokens, 5);
  for (const c of ids.choices) assert.equal(c.logprobs.tokens.length, 3);
});

await check("completions, streaming equals non-streaming", async () => {
  const full = await client.completions.create({ model, prompt: "Hello there", max_tokens: 16, temperature: 0 });
  const stream = await client.completions.create({ model, prompt: "Hello there", max_tokens: 16, temperature: 0, stream: true, stream_options: { include_usage: true } });
  let text = "";
  let finish = null;
  let usage = null;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      text += c.text;
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  assert.equal(text, full.choices[0].text);
  assert.equal(finish, full.choices[0].finish_reason);
  assert.equal(usage.completion_tokens, full.usage.completion_tokens);
});

await check("chat, greedy", async () => {
  const r = await client.chat.completions.create({
    model,
    messages: [{ role: "system", content: "You are terse." }, { role: "user", content: "Say hi." }],
    max_tokens: 10,
    temperature: 0,
  });
  assert.equal(r.object, "chat.completion");
  assert.equal(r.choices[0].message.role, "assistant");
  assert.equal(typeof r.choices[0].message.content, "string");
  assert.ok(r.usage.prompt_tokens > 5);
});

await check("chat, streaming equals non-streaming, logprobs", async () => {
  const messages = [{ role: "user", content: [{ type: "text", text: "Count to five." }] }];
  const full = await client.chat.completions.create({ model, messages, max_tokens: 12, temperature: 0, logprobs: true, top_logprobs: 2 });
  const lps = full.choices[0].logprobs.content;
  assert.ok(lps.length >= 1);
  for (const t of lps) {
    assert.equal(typeof t.token, "string");
    assert.ok(t.logprob <= 0);
    assert.equal(t.top_logprobs.length, 2);
  }
  const stream = await client.chat.completions.create({ model, messages, max_tokens: 12, temperature: 0, stream: true });
  let text = "";
  let role = null;
  for await (const chunk of stream) {
    const d = chunk.choices[0]?.delta;
    if (d?.role) role = d.role;
    if (d?.content) text += d.content;
  }
  assert.equal(role, "assistant");
  assert.equal(text, full.choices[0].message.content);
});

await check("errors surface as SDK exceptions", async () => {
  await assert.rejects(client.completions.create({ model: "no-such-model", prompt: "x", max_tokens: 1 }), (e) => e.status === 404);
  await assert.rejects(client.completions.create({ model, prompt: "x", max_tokens: 1, temperature: 7 }), (e) => e.status === 400 && /temperature/.test(e.message));
  const bad = new OpenAI({ baseURL, apiKey: "wrong", maxRetries: 0 });
  await assert.rejects(bad.models.list(), (e) => e.status === 401);
});

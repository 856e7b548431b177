// A stand-in OpenAI-compatible server for timing checks of `fp6serve bench serve`: every
// /v1/completions stream sends one token event each PACE_MS milliseconds (max_tokens of them),
// then a usage event and [DONE]. It prints its port on stdout.
//   Usage: node paced_sse.mjs PACE_MS
import http from "node:http";

const pace = Number(process.argv[2] ?? 20);
const server = http.createServer((req, res) => {
  if (req.method === "GET" && req.url === "/v1/models") {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ object: "list", data: [{ id: "paced", object: "model" }] }));
    return;
  }
  let body = "";
  req.on("data", (d) => (body += d));
  req.on("end", () => {
    const n = JSON.parse(body).max_tokens;
    res.writeHead(200, { "content-type": "text/event-stream" });
    res.socket.setNoDelay(true);
    let sent = 0;
    const send = () => {
      if (sent === n) {
        res.write(`data: ${JSON.stringify({ choices: [], usage: { completion_tokens: n } })}\n\n`);
        res.end("data: [DONE]\n\n");
        return;
      }
      // Padding makes each event ~200 bytes, like a real one, so a client that waits for a full
      // read buffer would see several at once.
      res.write(`data: ${JSON.stringify({ choices: [{ index: 0, text: "x", pad: "p".repeat(150) }] })}\n\n`);
      ++sent;
      setTimeout(send, pace);
    };
    send();
  });
});
server.listen(0, "127.0.0.1", () => console.log(server.address().port));

// A durable subscription on RabbitMQ 4.x over AMQP 1.0 with Node.js and rhea (npm install rhea),
// no pika: the queue is declared and bound through the broker's /management node (HTTP over
// AMQP 1.0), then read from /queues/NAME.  Each message is accepted after it was handled
// (at-least-once); duplicates (same message-id) are dropped.  See docs/consumers.md for how rhea
// hands over each value type (integers above 2^53 arrive as an 8-byte Buffer).
"use strict";
const rhea = require("rhea");

const env = process.env;
const HOST = env.KOJI_BUS_HOST || "127.0.0.1";
const PORT = Number(env.KOJI_BUS_PORT || 5672);
const USER = env.KOJI_BUS_USER || "guest";
const PASSWORD = env.KOJI_BUS_PASSWORD || "guest";
const EXCHANGE = env.KOJI_BUS_EXCHANGE || "koji.events";
const QUEUE = env.KOJI_BUS_QUEUE || "tag-watcher";
const BINDINGS = ["koji.event.Tag.f44-updates-candidate.*.*"];
const COUNT = Number(env.KOJI_BUS_COUNT || 0); // stop after this many messages (0: never)

const conn = rhea.connect({ host: HOST, port: PORT, username: USER, password: PASSWORD,
                            container_id: `rhea-${QUEUE}`, reconnect: false });
conn.on("error", (ctx) => { console.error("error:", ctx.error || ctx); process.exit(1); });
conn.on("disconnected", (ctx) => { if (ctx.error) { console.error("error:", ctx.error.message); process.exit(1); } });

// HTTP over AMQP: a sender and a receiver named alike, marked "paired", on /management.  rhea keeps
// one link per name in a session: open the receiver once the sender is attached.
const paired = { name: `mgmt-${QUEUE}`, properties: { paired: true }, snd_settle_mode: 1, rcv_settle_mode: 0 };
const requests = conn.open_sender({ ...paired, target: { address: "/management" } });
let answers;
const waiting = new Map();
let nextId = 1;
function onAnswer(ctx) {
  const done = waiting.get(ctx.message.correlation_id);
  if (done) { waiting.delete(ctx.message.correlation_id); done(ctx.message); }
}
function request(method, path, body) {
  const id = `req-${nextId++}`;
  return new Promise((resolve, reject) => {
    waiting.set(id, (answer) => {
      const status = Number(answer.subject);
      if (status >= 200 && status < 300) resolve(answer.body);
      else reject(new Error(`${method} ${path}: ${status} ${JSON.stringify(answer.body)}`));
    });
    requests.send({ message_id: id, to: path, subject: method, reply_to: "$me", body });
  });
}

async function subscribe() {
  const queue = `/queues/${encodeURIComponent(QUEUE)}`;
  await request("PUT", queue, { durable: true, exclusive: false, auto_delete: false,
                                arguments: { "x-queue-type": "quorum", "x-max-length": 1000000 } });
  for (const key of BINDINGS) {
    await request("POST", "/bindings", { source: EXCHANGE, destination_queue: QUEUE,
                                         binding_key: key, arguments: {} });
  }
  const receiver = conn.open_receiver({ source: { address: queue }, autoaccept: false, credit_window: 100 });
  receiver.on("receiver_open", () => console.error(`subscribed: ${queue} on exchange ${EXCHANGE}`));
  const seen = new Set();
  let handled = 0;
  receiver.on("message", (ctx) => {
    const msg = ctx.message;
    const id = String(msg.message_id);
    if (!seen.has(id)) {
      seen.add(id);
      if (seen.size > 100000) seen.delete(seen.values().next().value); // the last 100,000 ids
      console.log(JSON.stringify({ routing_key: msg.subject, id, headers: msg.application_properties,
                                   body: msg.body })); // your code here
    }
    ctx.delivery.accept(); // after handling: at-least-once
    handled += 1;
    if (COUNT && handled >= COUNT) conn.close();
  });
}

requests.once("sender_open", () => {
  answers = conn.open_receiver({ ...paired, source: { address: "/management" }, autoaccept: true });
  answers.on("message", onAnswer);
  // the first request after the receiver's credit has gone out (RabbitMQ ends the session otherwise)
  answers.once("receiver_open", () => setImmediate(() => subscribe().catch((e) => {
    console.error("error:", e.message);
    process.exit(1);
  })));
});

// Receive one message with rhea and print, for each body value and header, the JavaScript type
// it arrived as (tests/integration/test_consumer_types.py).
"use strict";
const rhea = require("rhea");
const env = process.env;

function kind(v) {
  if (v === null) return "null";
  if (v === undefined) return "undefined";
  if (Buffer.isBuffer(v)) return `Buffer(${v.length})`;
  if (Array.isArray(v)) return "Array";
  if (v instanceof Date) return "Date";
  if (typeof v === "object") return v.constructor && v.constructor.name !== "Object" ? v.constructor.name : "Object";
  return typeof v;
}
function text(v) {
  if (Buffer.isBuffer(v)) return v.toString("hex");
  if (v instanceof Date) return v.toISOString();
  return typeof v === "object" ? JSON.stringify(v) : String(v);
}

const conn = rhea.connect({ host: env.KOJI_BUS_HOST, port: Number(env.KOJI_BUS_PORT), username: env.KOJI_BUS_USER,
                            password: env.KOJI_BUS_PASSWORD, reconnect: false });
conn.on("disconnected", (ctx) => { if (ctx.error) { console.error(String(ctx.error)); process.exit(1); } });
const rcv = conn.open_receiver({ source: { address: env.KOJI_BUS_SOURCE }, autoaccept: false, credit_window: 1 });
rcv.on("message", (ctx) => {
  const m = ctx.message;
  const out = {};
  for (const [k, v] of Object.entries(m.body)) out[`body.${k}`] = [kind(v), text(v)];
  for (const [k, v] of Object.entries(m.application_properties || {})) out[`header.${k}`] = [kind(v), text(v)];
  out["message-id"] = [kind(m.message_id), text(m.message_id)];
  out["creation-time"] = [kind(m.creation_time), text(m.creation_time)];
  console.log(JSON.stringify(out));
  ctx.delivery.accept();
  conn.close();
});

// A koji-messagebus consumer written with Node's AMQP 1.0 client (rhea), validating every message
// against the JSON Schemas shipped in the Python package (ajv, draft 2020-12).  It shows that the
// contract is language-neutral: nothing here comes from the plugin's code.
//
// usage: node consumer.js URL SOURCE_ADDRESS COUNT SCHEMA_DIR TIMEOUT_SECONDS [topic]
// (`topic`: a multicast subscription, as Artemis wants for its wildcard addresses)
// Prints one JSON line per message: {routing_key, type, valid, errors: [{path, message}]}.
// Exits 0 after COUNT messages, 1 at the timeout or on a connection error.
'use strict';
const fs = require('fs');
const path = require('path');
const rhea = require('rhea');
const Ajv2020 = require('ajv/dist/2020');

const [url, source, countArg, schemaDir, timeoutArg, kind] = process.argv.slice(2);
const want = parseInt(countArg, 10);

const ajv = new Ajv2020({ allErrors: true, strict: false });
const validators = {};
for (const file of fs.readdirSync(schemaDir).filter((f) => f.endsWith('.json'))) {
  const schema = JSON.parse(fs.readFileSync(path.join(schemaDir, file), 'utf8'));
  validators[file.replace(/\.json$/, '')] = ajv.compile(schema);
}

// AMQP values as JSON: rhea gives Buffers for binaries and Dates for timestamps
function jsonable(value) {
  if (Buffer.isBuffer(value)) return value.toString('utf8');
  if (value instanceof Date) return value.getTime() / 1000;
  if (Array.isArray(value)) return value.map(jsonable);
  if (value !== null && typeof value === 'object') {
    const out = {};
    for (const [k, v] of Object.entries(value)) out[k] = jsonable(v);
    return out;
  }
  return value;
}

const u = new URL(url);
const container = rhea.create_container();
let seen = 0;
const timer = setTimeout(() => {
  process.stderr.write(`timeout: ${seen} of ${want} message(s)\n`);
  process.exit(1);
}, parseFloat(timeoutArg) * 1000);

container.on('message', (context) => {
  const msg = context.message;
  const headers = jsonable(msg.application_properties || {});
  const doc = { routing_key: msg.subject, headers, body: jsonable(msg.body) };
  const validate = validators[headers.type];
  let valid = false;
  let errors = [{ path: '/headers/type', message: `no schema for ${headers.type}` }];
  if (validate) {
    valid = validate(doc);
    errors = (validate.errors || []).map((e) => ({ path: e.instancePath || '/', message: e.message }));
  }
  process.stdout.write(JSON.stringify({ routing_key: msg.subject, type: headers.type, valid, errors }) + '\n');
  seen += 1;
  if (seen >= want) {
    clearTimeout(timer);
    context.connection.close();
  }
});
container.on('connection_close', () => process.exit(seen >= want ? 0 : 1));
container.on('error', (err) => {
  process.stderr.write(`error: ${err}\n`);
  process.exit(1);
});
container.on('disconnected', (context) => {
  if (seen < want) {
    process.stderr.write(`disconnected: ${context.error || ''}\n`);
    process.exit(1);
  }
});

const conn = container.connect({
  host: u.hostname, port: parseInt(u.port || '5672', 10),
  username: decodeURIComponent(u.username), password: decodeURIComponent(u.password),
  reconnect: false,
});
const address = kind === 'topic' ? { address: source, capabilities: ['topic'] } : source;
conn.open_receiver({ source: address, credit_window: 500, autoaccept: true });
conn.on('receiver_open', () => process.stderr.write(`attached ${source}\n`));

#!/usr/bin/env node
// A Node.js client of a bacalhaud node, written from proto/ and docs/ alone (docs/api.md):
// signs every call with a user key (docs/security.md), uploads a WASI module, submits a job,
// follows its events and its logs, and reads a file of its result through GetResults.
//
//   npm ci && BACALHAU_API=127.0.0.1:1234 node client.js [MODULE.wasm] [ARGS...]
//
// Environment: BACALHAU_API (default 127.0.0.1:1234); BACALHAU_USER_KEY, a file holding the
// raw 32-byte Ed25519 seed (made, mode 0600, if missing; default ~/.bacalhau/user.key, the
// same key bacalhauctl uses); BACALHAU_PROTO, the proto/ folder (default ../../proto).
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const API = process.env.BACALHAU_API || '127.0.0.1:1234';
const PROTO = process.env.BACALHAU_PROTO || path.join(__dirname, '..', '..', 'proto');
const SERVICE = 'bacalhau.v1.ClientService';

// -- the user key and its ID ------------------------------------------------------------

function loadKey(file) {
  if (!fs.existsSync(file)) {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, crypto.randomBytes(32), { mode: 0o600, flag: 'wx' });
  }
  const seed = fs.readFileSync(file);
  if (seed.length !== 32) throw new Error(`${file} is not a 32-byte Ed25519 seed`);
  // PKCS#8 wrapping of a raw Ed25519 seed (RFC 8410).
  const der = Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), seed]);
  const privateKey = crypto.createPrivateKey({ key: der, format: 'der', type: 'pkcs8' });
  const spki = crypto.createPublicKey(privateKey).export({ format: 'der', type: 'spki' });
  const pub = spki.subarray(spki.length - 32);
  // libp2p peer ID: identity multihash of the protobuf PublicKey {Type: Ed25519, Data: pub}.
  const keyProto = Buffer.concat([Buffer.from([0x08, 0x01, 0x12, 0x20]), pub]);
  const userId = base58(Buffer.concat([Buffer.from([0x00, keyProto.length]), keyProto]));
  return { privateKey, userId };
}

const B58 = '123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz';
function base58(bytes) {
  let n = BigInt('0x' + (bytes.toString('hex') || '0'));
  let out = '';
  while (n > 0n) {
    out = B58[Number(n % 58n)] + out;
    n /= 58n;
  }
  for (const b of bytes) {
    if (b !== 0) break;
    out = '1' + out;
  }
  return out;
}

function base32(bytes) {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz234567';
  let bits = 0, value = 0, out = '';
  for (const b of bytes) {
    value = (value << 8) | b;
    bits += 8;
    while (bits >= 5) {
      out += alphabet[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += alphabet[(value << (5 - bits)) & 31];
  return out;
}

// -- signed calls (docs/security.md) ------------------------------------------------------

function signature(key, method, body) {
  const time = String(Date.now());
  const nonce = crypto.randomBytes(16).toString('hex');
  const digest = crypto.createHash('sha256').update(body || Buffer.alloc(0)).digest('hex');
  const payload = ['bacalhau-call-v1', method, time, nonce, digest].join('\n');
  const sig = crypto.sign(null, Buffer.from(payload), key.privateKey).toString('base64');
  const md = new grpc.Metadata();
  md.set('bacalhau-user', key.userId);
  md.set('bacalhau-time', time);
  md.set('bacalhau-nonce', nonce);
  md.set('bacalhau-signature', sig);
  return md;
}

class Bacalhau {
  constructor(api, key) {
    const def = protoLoader.loadSync('bacalhau/v1/client.proto', {
      includeDirs: [PROTO], keepCase: true, longs: String, enums: String, defaults: true,
    });
    this.methods = def[SERVICE];
    this.client = new grpc.Client(api, grpc.credentials.createInsecure());
    this.key = key;
  }

  // Serialize once, sign those bytes, send the same bytes (an identity serializer).
  prepare(name, request) {
    const m = this.methods[name];
    const body = m.requestSerialize(request);
    return { m, body, md: signature(this.key, m.path, body) };
  }

  unary(name, request) {
    const { m, body, md } = this.prepare(name, request);
    return new Promise((resolve, reject) => {
      this.client.makeUnaryRequest(m.path, (b) => b, m.responseDeserialize, body, md,
        { deadline: Date.now() + 30000 }, (err, reply) => (err ? reject(explain(err)) : resolve(reply)));
    });
  }

  stream(name, request) {
    const { m, body, md } = this.prepare(name, request);
    return this.client.makeServerStreamRequest(m.path, (b) => b, m.responseDeserialize, body, md, {});
  }

  // AddData is client-streaming: the signature covers SHA-256 of no bytes (docs/security.md).
  upload(name, bytes) {
    const m = this.methods.AddData;
    const md = signature(this.key, m.path, null);
    return new Promise((resolve, reject) => {
      const call = this.client.makeClientStreamRequest(m.path, m.requestSerialize,
        m.responseDeserialize, md, {}, (err, reply) => (err ? reject(explain(err)) : resolve(reply)));
      call.write({ header: { name } });
      for (let i = 0; i < bytes.length; i += 1 << 20) call.write({ chunk: bytes.subarray(i, i + (1 << 20)) });
      call.end();
    });
  }
}

// A node's error: code, message, and the google.rpc.ErrorInfo reason (docs/api.md).
function explain(err) {
  const bin = err.metadata && err.metadata.get('grpc-status-details-bin')[0];
  const reason = bin ? errorInfoReason(bin) : '';
  const e = new Error(`${grpc.status[err.code] || err.code}${reason ? ' ' + reason : ''}: ${err.details}`);
  e.code = err.code;
  e.reason = reason;
  return e;
}

function errorInfoReason(statusBytes) {
  // google.rpc.Status {details (3): Any {type_url (1), value (2): ErrorInfo {reason (1)}}}
  for (const [field, any] of fields(statusBytes)) {
    if (field !== 3) continue;
    const parts = Object.fromEntries(fields(any));
    if (String(parts[1]).endsWith('google.rpc.ErrorInfo')) return String(Object.fromEntries(fields(parts[2]))[1]);
  }
  return '';
}

// -- just enough protobuf to walk a result folder (dag-pb and UnixFS) -----------------------

function* fields(buf) {
  let i = 0;
  const varint = () => {
    let n = 0n, shift = 0n;
    for (;;) {
      const b = buf[i++];
      n |= BigInt(b & 0x7f) << shift;
      if (!(b & 0x80)) return n;
      shift += 7n;
    }
  };
  while (i < buf.length) {
    const tag = Number(varint());
    const wire = tag & 7;
    if (wire === 0) yield [tag >> 3, varint()];
    else if (wire === 2) {
      const len = Number(varint());
      yield [tag >> 3, buf.subarray(i, i + len)];
      i += len;
    } else throw new Error(`unexpected wire type ${wire}`);
  }
}

function dagNode(bytes) {
  const node = { links: [], data: Buffer.alloc(0) };
  for (const [f, v] of fields(bytes)) {
    if (f === 1) node.data = v;
    if (f === 2) {
      const link = Object.fromEntries(fields(v));
      node.links.push({ hash: link[1], name: link[2] ? link[2].toString() : '' });
    }
  }
  return node;
}

// A binary CID as its string: CIDv0 (a bare sha2-256 multihash) in base58btc, else base32.
function cidString(bin) {
  return bin[0] === 0x12 && bin[1] === 0x20 ? base58(bin) : 'b' + base32(bin);
}

function isRaw(bin) {
  return bin[0] === 0x01 && bin[1] === 0x55;
}

function check(bin, data) {
  const digest = bin.subarray(bin.length - 32);
  const got = crypto.createHash('sha256').update(data).digest();
  if (!got.equals(digest)) throw new Error(`block ${cidString(bin)} does not match its CID`);
}

function fileBytes(blocks, bin) {
  const data = blocks.get(cidString(bin));
  if (data === undefined) throw new Error(`missing block ${cidString(bin)}`);
  check(bin, data);
  if (isRaw(bin)) return data;
  const node = dagNode(data);
  if (node.links.length) return Buffer.concat(node.links.map((l) => fileBytes(blocks, l.hash)));
  const unixfs = Object.fromEntries(fields(node.data));
  return unixfs[2] || Buffer.alloc(0);
}

async function readResultFile(api, jobId, filePath) {
  const blocks = new Map();
  let root = '';
  for await (const chunk of api.stream('GetResults', { job_id: jobId })) {
    if (chunk.root_cid) root = chunk.root_cid;
    else blocks.set(chunk.block_cid, chunk.data);
  }
  if (!blocks.has(root)) throw new Error(`the result's root ${root} did not come`);
  let node = dagNode(blocks.get(root));
  let bin = null;
  for (const part of filePath.split('/')) {
    const link = node.links.find((l) => l.name === part);
    if (!link) throw new Error(`the result has no ${filePath}`);
    bin = link.hash;
    if (!isRaw(bin)) node = dagNode(blocks.get(cidString(bin)));
  }
  return fileBytes(blocks, bin);
}

// One file's bytes through Cat: the node walks the folders and checks every block against its
// CID, so the client needs none of the decoding above (that is for checking blocks yourself).
async function catFile(api, request) {
  const parts = [];
  for await (const chunk of api.stream('Cat', request)) parts.push(chunk.data);
  return Buffer.concat(parts);
}

// -- the example ----------------------------------------------------------------------------

async function main() {
  const [moduleArg, ...args] = process.argv.slice(2);
  const modulePath = moduleArg || path.join(__dirname, '..', 'wasm', 'echo.wasm');
  const keyFile = process.env.BACALHAU_USER_KEY || path.join(os.homedir(), '.bacalhau', 'user.key');
  const api = new Bacalhau(API, loadKey(keyFile));

  const info = await api.unary('NodeInfo', {});
  console.log(`node ${info.node_id} (${info.version}), engines ${info.engines.join(',')}`);

  const uploaded = await api.upload(path.basename(modulePath), fs.readFileSync(modulePath));
  const spec = {
    engine: 'wasm',
    wasm: { module_cid: uploaded.cid, args: args.length ? args : ['hello', 'from', 'node.js'] },
    outputs: [{ name: 'outputs', path: '/outputs' }],
  };
  const { job_id: jobId } = await api.unary('Submit', { spec });
  console.log(`job ${jobId}`);

  for await (const event of api.stream('WatchEvents', { job_id: jobId, follow: true })) {
    console.log(`event ${event.seq} ${event.type}`);
  }
  for await (const chunk of api.stream('Logs', { job_id: jobId, follow: true })) {
    process.stdout.write(`log ${chunk.stream === 'STREAM_STDERR' ? 'stderr' : 'stdout'}: ${chunk.data}`);
  }
  const { job } = await api.unary('GetJob', { job_id: jobId });
  console.log(`state ${job.state}`);
  const stdout = await readResultFile(api, jobId, 'stdout');
  process.stdout.write(`result stdout: ${stdout}`);
  const output = await catFile(api, { job_id: jobId, file: 'outputs/result.txt' });
  process.stdout.write(`cat outputs/result.txt: ${output}`);

  try {
    await api.unary('GetJob', { job_id: '' });
  } catch (e) {
    console.log(`empty job_id: ${e.message}`);
  }
  api.client.close();
  if (job.state !== 'JOB_STATE_COMPLETED') process.exit(1);
}

main().catch((e) => {
  console.error(`error: ${e.message}`);
  process.exit(1);
});

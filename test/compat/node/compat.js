#!/usr/bin/env node
// Drives a live iron-api with the real Node IronWorker client (iron_worker 0.1.8), the way an
// app developer's code would, and checks what the client gets back.
//
//   IRON_HOST=127.0.0.1 IRON_PORT=8080 IRON_PROJECT_ID=... IRON_TOKEN=... node compat.js
//
// IRON_SCHEME defaults to http. Prints one line per check; exits 1 at the first failure.
'use strict';

const http = require('http');
const https = require('https');
const fs = require('fs');
const os = require('os');
const path = require('path');
const iron_worker = require('iron_worker');

function env(name, fallback) {
  const v = process.env[name];
  if (v === undefined || v === '') {
    if (fallback !== undefined) return fallback;
    console.error(`compat.js: ${name} is not set (need IRON_HOST, IRON_PORT, IRON_PROJECT_ID, IRON_TOKEN)`);
    process.exit(2);
  }
  return v;
}

const opts = {
  scheme: env('IRON_SCHEME', 'http'),
  host: env('IRON_HOST'),
  port: parseInt(env('IRON_PORT'), 10),
  project_id: env('IRON_PROJECT_ID'),
  token: env('IRON_TOKEN'),
};

const client = new iron_worker.Client(opts);

// --- tiny check harness ------------------------------------------------------------------

let passed = 0;

class CheckError extends Error {}

function fail(msg) {
  throw new CheckError(msg);
}

function show(v) {
  try {
    return JSON.stringify(v);
  } catch (e) {
    return String(v);
  }
}

function assert(cond, msg, got) {
  if (!cond) fail(arguments.length > 2 ? `${msg} (got ${show(got)})` : msg);
}

const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;
const HEX24 = /^[0-9a-f]{24}$/;

function isString(obj, field) {
  assert(typeof obj[field] === 'string', `${field} must be a string`, obj[field]);
}
function isInteger(obj, field) {
  assert(Number.isInteger(obj[field]), `${field} must be an integer number`, obj[field]);
}
function isTime(obj, field) {
  assert(typeof obj[field] === 'string' && RFC3339.test(obj[field]),
    `${field} must be an RFC 3339 time with a zone`, obj[field]);
}
function isID(obj, field) {
  assert(typeof obj[field] === 'string' && HEX24.test(obj[field]), `${field} must be a 24-hex id`, obj[field]);
}
function optional(obj, field, check) {
  if (obj[field] !== undefined && obj[field] !== null) check(obj, field);
}

async function check(name, fn) {
  try {
    const detail = await fn();
    passed++;
    console.log(`ok   ${name}${detail ? ' — ' + detail : ''}`);
  } catch (e) {
    console.log(`FAIL ${name}`);
    console.log(`     ${e instanceof CheckError ? e.message : (e && e.stack) || e}`);
    console.log(`compat: ${passed} passed, 1 failed (stopped at the first failure)`);
    process.exit(1);
  }
}

// call(fn, args...) runs a callback-style client method; resolves its body, rejects with
// the client's Error (whose message is what the client shows its user).
function call(method, ...args) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${method}: no answer within 30s`)), 30000);
    try {
      client[method](...args, (err, body) => {
        clearTimeout(timer);
        if (err) {
          const e = new CheckError(`${method} failed: ${err.message}`);
          e.clientError = err;
          reject(e);
        } else {
          resolve(body);
        }
      });
    } catch (e) {
      clearTimeout(timer);
      reject(e);
    }
  });
}

// callErr runs a client method that must fail, and resolves the client's Error.
function callErr(method, ...args) {
  return call(method, ...args).then(
    (body) => fail(`${method} should have failed, but answered ${show(body)}`),
    (e) => {
      if (!e.clientError) throw e;
      return e.clientError;
    });
}

// rawGet fetches a path with the token, for the few things the client hides (status codes).
function rawGet(p) {
  const mod = opts.scheme === 'https' ? https : http;
  return new Promise((resolve, reject) => {
    const req = mod.request({
      host: opts.host, port: opts.port, method: 'GET', path: p,
      headers: { Authorization: `OAuth ${opts.token}`, Accept: 'application/json' },
    }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => { body += c; });
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.setTimeout(30000, () => req.destroy(new Error(`GET ${p}: no answer within 30s`)));
    req.end();
  });
}

function asObject(body, what) {
  if (typeof body === 'string') {
    try {
      return JSON.parse(body);
    } catch (e) {
      fail(`${what}: body is not JSON: ${body}`);
    }
  }
  assert(body && typeof body === 'object', `${what}: body must be a JSON object`, body);
  return body;
}

// adm-zip 0.4.4, which iron_worker 0.1.8 zips with, writes each file's CRC-32 with
// Buffer.writeInt32LE: on Node >= 10 a CRC of 2^31 or more throws ERR_OUT_OF_RANGE. This is a
// client bug unrelated to the server, so pick a worker file name and source whose CRCs
// (and that of the __runner__.sh the client appends "node <file>" to) stay below 2^31.
const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();
function crc32(buf) {
  let c = 0xffffffff;
  for (const b of buf) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
function zipSafeWorker(runner) {
  const fits = (b) => crc32(b) < 2 ** 31;
  for (let i = 0; ; i++) {
    const worker = i === 0 ? 'hello.js' : `hello${i}.js`;
    if (!fits(Buffer.concat([runner, Buffer.from(`\nnode ${worker}`)]))) continue;
    for (let j = 0; ; j++) {
      const source = `console.log('hello from node');\n// ${j}\n`;
      if (fits(Buffer.from(source))) return { worker, source };
    }
  }
}

// --- the checks ----------------------------------------------------------------------------

const suffix = `${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
const codeName = `compat-node-hello-${suffix}`;
const zipCodeName = `compat-node-zip-${suffix}`;
const P = `/2/projects/${opts.project_id}`;

async function main() {
  console.log(`compat: iron_worker ${require('iron_worker/package.json').version} against ` +
    `${opts.scheme}://${opts.host}:${opts.port} project ${opts.project_id}`);

  let codeID, codeRev;

  // Codes ---------------------------------------------------------------------------------
  // The client's high-level codesUpload always zips a Node worker; a Docker-image code is
  // registered through the same client's APIClient.codesUpload (multipart, field `data`).
  await check('upload a Docker-image code with the client (api.codesUpload, multipart data)', async () => {
    const body = asObject(await new Promise((resolve, reject) => {
      client.api.codesUpload({ data: JSON.stringify({ name: codeName, image: 'iron/hello' }) },
        (err, b) => (err ? reject(new CheckError(`codesUpload failed: ${err.message}`)) : resolve(b)));
    }), 'codesUpload');
    isID(body, 'id');
    codeID = body.id;
    return `id ${codeID}, msg ${show(body.msg)}`;
  });

  await check('upload the same name again makes a new revision with the same id', async () => {
    const body = asObject(await new Promise((resolve, reject) => {
      client.api.codesUpload(
        { data: JSON.stringify({ name: codeName, image: 'iron/hello', command: 'echo hi', max_concurrency: 2 }) },
        (err, b) => (err ? reject(new CheckError(`codesUpload failed: ${err.message}`)) : resolve(b)));
    }), 'codesUpload');
    assert(body.id === codeID, `second upload must answer the code's id ${codeID}`, body.id);
  });

  let zipCodeID;
  await check('upload a zipped Node worker with the client (codesUpload: runtime sh, __runner__.sh)', async () => {
    // codesUpload copies "upload_files" relative to the working directory (a client quirk),
    // so run it from the package's own directory.
    const pkgDir = path.dirname(require.resolve('iron_worker/package.json'));
    const { worker, source } = zipSafeWorker(fs.readFileSync(path.join(pkgDir, 'upload_files', '__runner__.sh')));
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iron-compat-'));
    fs.writeFileSync(path.join(dir, worker), source);
    const cwd = process.cwd();
    process.chdir(pkgDir);
    try {
      const body = asObject(await call('codesUpload', zipCodeName, dir, worker), 'codesUpload');
      isID(body, 'id');
      zipCodeID = body.id;
    } finally {
      process.chdir(cwd);
      fs.rmSync(dir, { recursive: true, force: true });
    }
    return `id ${zipCodeID}`;
  });

  await check('codesList returns an array holding both codes', async () => {
    const codes = await call('codesList', {});
    assert(Array.isArray(codes), 'codesList must yield an array (body.codes)', codes);
    const names = codes.map((c) => c.name);
    assert(names.includes(codeName) && names.includes(zipCodeName), `list must include ${codeName} and ${zipCodeName}`, names);
    return `${codes.length} codes`;
  });

  await check('codesGet returns the code with client-visible types', async () => {
    const code = asObject(await call('codesGet', codeID), 'codesGet');
    assert(code.id === codeID, 'id', code.id);
    assert(code.name === codeName, 'name', code.name);
    assert(code.project_id === opts.project_id, 'project_id', code.project_id);
    isInteger(code, 'rev');
    assert(code.rev === 2, 'rev after two uploads must be 2', code.rev);
    isTime(code, 'created_at');
    optional(code, 'latest_change', isTime);
    optional(code, 'image', isString);
    optional(code, 'max_concurrency', isInteger);
    codeRev = code.rev;
    return `rev ${code.rev}, image ${show(code.image)}`;
  });

  await check('codesRevisions lists both revisions with integer rev', async () => {
    const revs = await call('codesRevisions', codeID, {});
    assert(Array.isArray(revs), 'codesRevisions must yield an array (body.revisions)', revs);
    assert(revs.length === 2, 'two revisions expected', revs.length);
    for (const r of revs) {
      isInteger(r, 'rev');
      isString(r, 'id');
      assert(r.code_id === undefined || r.code_id === codeID, 'revision code_id', r.code_id);
      optional(r, 'created_at', isTime);
    }
    const revNumbers = revs.map((r) => r.rev).sort();
    assert(show(revNumbers) === '[1,2]', 'revisions must be rev 1 and 2', revNumbers);
  });

  // Tasks ---------------------------------------------------------------------------------
  let taskID;
  const payload = { hello: 'world', n: 1 };
  await check('tasksCreate queues a task (object payload, timeout, priority, label)', async () => {
    const t = asObject(await call('tasksCreate', codeName, payload, { timeout: 120, priority: 1, label: 'compat' }), 'tasksCreate');
    isID(t, 'id');
    taskID = t.id;
    return `id ${taskID}`;
  });

  await check('tasksGet returns the task with client-visible types', async () => {
    const t = asObject(await call('tasksGet', taskID), 'tasksGet');
    assert(t.id === taskID, 'id', t.id);
    assert(t.project_id === opts.project_id, 'project_id', t.project_id);
    assert(t.code_name === codeName, 'code_name', t.code_name);
    assert(t.code_id === codeID, 'code_id', t.code_id);
    isString(t, 'code_rev');
    assert(t.code_rev === String(codeRev), `code_rev must be "${codeRev}"`, t.code_rev);
    isString(t, 'code_history_id');
    assert(t.status === 'queued', 'status must be queued', t.status);
    isInteger(t, 'timeout');
    assert(t.timeout === 120, 'timeout must be 120', t.timeout);
    optional(t, 'priority', isInteger);
    assert(t.priority === undefined || t.priority === 1, 'priority must be 1', t.priority);
    assert(t.payload === JSON.stringify(payload), 'payload must be the JSON string the client sent', t.payload);
    assert(t.label === undefined || t.label === 'compat', 'label', t.label);
    isTime(t, 'created_at');
    isTime(t, 'updated_at');
    optional(t, 'percent', isInteger);
    optional(t, 'duration', isInteger);
    optional(t, 'delay', isInteger);
    return `status ${t.status}, code_rev ${show(t.code_rev)}, timeout ${t.timeout}`;
  });

  await check('tasksList returns an array holding the task', async () => {
    const tasks = await call('tasksList', {});
    assert(Array.isArray(tasks), 'tasksList must yield an array (body.tasks)', tasks);
    const t = tasks.find((x) => x.id === taskID);
    assert(t, `list must include ${taskID}`, tasks.map((x) => x.id));
    isString(t, 'code_rev');
    isInteger(t, 'timeout');
    return `${tasks.length} tasks`;
  });

  await check('tasksList filters by code_name and status flags', async () => {
    const queued = await call('tasksList', { code_name: codeName, queued: 1 });
    assert(Array.isArray(queued) && queued.some((x) => x.id === taskID), 'queued=1&code_name= must include the task', queued);
    assert(queued.every((x) => x.code_name === codeName && x.status === 'queued'), 'every task must match the filters', queued);
    const complete = await call('tasksList', { code_name: codeName, complete: 1 });
    assert(Array.isArray(complete) && !complete.some((x) => x.id === taskID), 'complete=1 must not include a queued task', complete);
  });

  await check('tasksLog before any log fails with a message matching /log/i (tasksWaitForLog retries on it)', async () => {
    const err = await callErr('tasksLog', taskID);
    assert(/log/i.test(err.message), 'the error message must match /log/i', err.message);
    const raw = await rawGet(`${P}/tasks/${taskID}/log`);
    assert(raw.status === 404, 'GET .../log before a log exists must answer 404', raw.status);
    const msg = JSON.parse(raw.body).msg;
    assert(typeof msg === 'string' && /log/i.test(msg), '404 body must be {"msg": "...log..."}', raw.body);
    return `error ${show(err.message)}`;
  });

  await check('tasksWaitForLog keeps retrying on that error until its tries run out', async () => {
    const err = await callErr('tasksWaitForLog', taskID, { tries: 2, sleep: 0.1 });
    assert(/timeout waiting for task log/i.test(err.message), 'tasksWaitForLog must retry, then time out', err.message);
  });

  await check('tasksSetProgress sets percent and msg', async () => {
    const body = asObject(await call('tasksSetProgress', taskID, { percent: 50, msg: 'half way' }), 'tasksSetProgress');
    isString(body, 'msg');
    const t = asObject(await call('tasksGet', taskID), 'tasksGet');
    isInteger(t, 'percent');
    assert(t.percent === 50, 'percent must be 50', t.percent);
    assert(t.msg === 'half way', 'msg must be the progress message', t.msg);
    return `answer ${show(body.msg)}`;
  });

  await check('tasksCancel cancels the queued task', async () => {
    const body = asObject(await call('tasksCancel', taskID), 'tasksCancel');
    isString(body, 'msg');
    const t = asObject(await call('tasksGet', taskID), 'tasksGet');
    assert(t.status === 'cancelled', 'status must be cancelled', t.status);
    optional(t, 'end_time', isTime);
    return `answer ${show(body.msg)}`;
  });

  let retryID;
  await check('tasksRetry re-queues the cancelled task as a new task', async () => {
    const body = asObject(await call('tasksRetry', taskID, 0), 'tasksRetry');
    assert(Array.isArray(body.tasks) && body.tasks.length === 1, 'retry must answer {"tasks":[{"id"}]}', body);
    isID(body.tasks[0], 'id');
    retryID = body.tasks[0].id;
    assert(retryID !== taskID, 'the retry must be a new task');
    const t = asObject(await call('tasksGet', retryID), 'tasksGet');
    assert(t.status === 'queued', 'the retry must be queued', t.status);
    assert(t.code_name === codeName, 'the retry runs the same code', t.code_name);
    assert(t.payload === JSON.stringify(payload), 'the retry keeps the payload', t.payload);
    isString(t, 'code_rev');
    isInteger(t, 'timeout');
    optional(t, 'original_task_id', (o) => assert(o.original_task_id === taskID, 'original_task_id', o.original_task_id));
    return `new id ${retryID}`;
  });

  await check('tasksCancel on the retry', async () => {
    await call('tasksCancel', retryID);
    const t = asObject(await call('tasksGet', retryID), 'tasksGet');
    assert(t.status === 'cancelled', 'status must be cancelled', t.status);
  });

  await check('tasksGet of an unknown task fails', async () => {
    const err = await callErr('tasksGet', '000000000000000000000000');
    return `error ${show(err.message)}`;
  });

  // Schedules -----------------------------------------------------------------------------
  let scheduleID;
  const startAt = new Date(Date.now() + 3600 * 1000);
  startAt.setMilliseconds(0);
  await check('schedulesCreate creates a schedule', async () => {
    const s = asObject(await call('schedulesCreate', codeName, { every: 'hour' },
      { start_at: startAt.toISOString(), run_every: 3600, run_times: 5, priority: 0, label: 'compat' }), 'schedulesCreate');
    isID(s, 'id');
    scheduleID = s.id;
    return `id ${scheduleID}`;
  });

  await check('schedulesList returns an array holding the schedule', async () => {
    const list = await call('schedulesList', {});
    assert(Array.isArray(list), 'schedulesList must yield an array (body.schedules)', list);
    assert(list.some((s) => s.id === scheduleID), `list must include ${scheduleID}`, list.map((s) => s.id));
    return `${list.length} schedules`;
  });

  await check('schedulesGet returns the schedule with client-visible types', async () => {
    const s = asObject(await call('schedulesGet', scheduleID), 'schedulesGet');
    assert(s.id === scheduleID, 'id', s.id);
    assert(s.project_id === opts.project_id, 'project_id', s.project_id);
    assert(s.code_name === codeName, 'code_name', s.code_name);
    assert(s.payload === JSON.stringify({ every: 'hour' }), 'payload must be the JSON string the client sent', s.payload);
    assert(s.status === 'scheduled', 'status must be scheduled', s.status);
    isInteger(s, 'run_every');
    assert(s.run_every === 3600, 'run_every', s.run_every);
    isInteger(s, 'run_times');
    assert(s.run_times === 5, 'run_times', s.run_times);
    isTime(s, 'start_at');
    assert(Date.parse(s.start_at) === startAt.getTime(), `start_at must be ${startAt.toISOString()}`, s.start_at);
    isTime(s, 'created_at');
    isTime(s, 'updated_at');
    optional(s, 'run_count', isInteger);
    optional(s, 'priority', isInteger);
    optional(s, 'next_start', isTime);
    optional(s, 'last_run_time', isTime);
    optional(s, 'end_at', isTime);
    return `status ${s.status}, next_start ${show(s.next_start)}`;
  });

  await check('schedulesCancel cancels the schedule', async () => {
    const body = asObject(await call('schedulesCancel', scheduleID), 'schedulesCancel');
    isString(body, 'msg');
    const s = asObject(await call('schedulesGet', scheduleID), 'schedulesGet');
    assert(s.status === 'cancelled', 'status must be cancelled', s.status);
    return `answer ${show(body.msg)}`;
  });

  await check('codesDownload returns the zip the client uploaded', async () => {
    const body = await call('codesDownload', zipCodeID, {});
    assert(typeof body === 'string' && body.startsWith('PK'), 'download must be a zip (starts with PK)',
      typeof body === 'string' ? body.slice(0, 40) : body);
  });

  await check('tasksCancelAll cancels every queued task of a code (delayed tasks too)', async () => {
    const a = asObject(await call('tasksCreate', zipCodeName, 'plain text payload', { delay: 60 }), 'tasksCreate');
    const b = asObject(await call('tasksCreate', zipCodeName, '', {}), 'tasksCreate');
    const t = asObject(await call('tasksGet', a.id), 'tasksGet');
    assert(t.payload === 'plain text payload', 'a string payload is sent as is', t.payload);
    isInteger(t, 'delay');
    assert(t.delay === 60, 'delay must be 60', t.delay);
    const body = asObject(await call('tasksCancelAll', zipCodeID), 'tasksCancelAll');
    isString(body, 'msg');
    for (const id of [a.id, b.id]) {
      const x = asObject(await call('tasksGet', id), 'tasksGet');
      assert(x.status === 'cancelled', `task ${id} must be cancelled`, x.status);
    }
    return `answer ${show(body.msg)}`;
  });

  // Delete --------------------------------------------------------------------------------
  await check('codesDelete deletes the code; codesGet then fails and codesList drops it', async () => {
    const body = await call('codesDelete', codeID);
    const err = await callErr('codesGet', codeID);
    const codes = await call('codesList', {});
    assert(!codes.some((c) => c.id === codeID), 'codesList must not list a deleted code', codes.map((c) => c.name));
    return `answer ${show(body)}, then ${show(err.message)}`;
  });

  await check('tasksCreate for a deleted code fails', async () => {
    const err = await callErr('tasksCreate', codeName, {}, {});
    return `error ${show(err.message)}`;
  });

  await check('codesDelete the zipped code', async () => {
    await call('codesDelete', zipCodeID);
    await callErr('codesGet', zipCodeID);
  });

  console.log(`compat: ${passed} passed, 0 failed`);
}

main().catch((e) => {
  console.log(`FAIL unexpected error: ${(e && e.stack) || e}`);
  process.exit(1);
});

#!/usr/bin/env node
// The Node IronWorker client (iron_worker 0.1.8) against tasks that really run: queues a
// task of an existing code (a shell worker that prints its payload, and one that fails),
// waits for it with tasksWaitFor and reads its log with tasksLog.
//
//   IRON_HOST=127.0.0.1 IRON_PORT=8080 IRON_PROJECT_ID=... IRON_TOKEN=... \
//   IRON_CODE_NAME=echo IRON_FAILING_CODE_NAME=failing node run.js
//
// The echo code must print its payload; the failing one must exit non-zero after writing
// "worker gave up" as its last stderr line. Prints one line per check; exits 1 at the
// first failure.
'use strict';

const iron_worker = require('iron_worker');

function env(name) {
  const v = process.env[name];
  if (!v) {
    console.error(`run.js: ${name} is not set`);
    process.exit(2);
  }
  return v;
}

const client = new iron_worker.Client({
  scheme: process.env.IRON_SCHEME || 'http',
  host: env('IRON_HOST'),
  port: parseInt(env('IRON_PORT'), 10),
  project_id: env('IRON_PROJECT_ID'),
  token: env('IRON_TOKEN'),
});

function call(method, ...args) {
  return new Promise((resolve, reject) => {
    client[method](...args, (err, body) => (err ? reject(new Error(`${method} failed: ${err.message}`)) : resolve(body)));
  });
}

function asObject(body) {
  return typeof body === 'string' ? JSON.parse(body) : body;
}

let passed = 0;
async function check(name, fn) {
  try {
    const detail = await fn();
    passed++;
    console.log(`ok   ${name}${detail ? ' — ' + detail : ''}`);
  } catch (e) {
    console.log(`FAIL ${name}\n     ${e.message}`);
    process.exit(1);
  }
}

function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

async function main() {
  const marker = `payload-${Date.now().toString(36)}`;
  let taskID;
  await check('tasksCreate queues a task of the echo code', async () => {
    const t = asObject(await call('tasksCreate', env('IRON_CODE_NAME'), { marker }, {}));
    taskID = t.id;
    assert(typeof taskID === 'string' && taskID.length > 0, `no task id in ${JSON.stringify(t)}`);
    return taskID;
  });
  await check('tasksWaitFor returns once the task has run, with status complete', async () => {
    const t = asObject(await call('tasksWaitFor', taskID, { sleep: 0.1, tries: 60 }));
    assert(t.status === 'complete', `status ${t.status} (msg ${t.msg})`);
    assert(typeof t.start_time === 'string' && typeof t.end_time === 'string', 'start_time and end_time are set');
    return `duration ${t.duration} ms`;
  });
  await check('tasksLog returns what the worker printed (its payload)', async () => {
    const log = await call('tasksLog', taskID);
    assert(typeof log === 'string', `log is a ${typeof log}`);
    assert(log.includes(marker), `log does not contain the payload: ${JSON.stringify(log)}`);
    return JSON.stringify(log.trim());
  });
  let failedID;
  await check('tasksWaitFor reports a failing worker as error, msg = its last stderr line', async () => {
    failedID = asObject(await call('tasksCreate', env('IRON_FAILING_CODE_NAME'), '', {})).id;
    const t = asObject(await call('tasksWaitFor', failedID, { sleep: 0.1, tries: 60 }));
    assert(t.status === 'error', `status ${t.status}`);
    assert(t.msg === 'worker gave up', `msg ${JSON.stringify(t.msg)}`);
  });
  await check('tasksLog of the failed task has its output', async () => {
    const log = await call('tasksLog', failedID);
    assert(log.includes('worker gave up'), `log: ${JSON.stringify(log)}`);
  });
  console.log(`run: ${passed} passed`);
}

main().catch((e) => {
  console.log(`FAIL ${e.stack || e}`);
  process.exit(1);
});

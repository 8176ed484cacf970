// A load generator for windshift-grpc serve written with @grpc/grpc-js: the
// workloads of benchmarks/grpc_workloads.py driven from another gRPC
// implementation, so that a benchmark can tell the server's limit from the
// Python client's.
//
//     node loadgen.js --target 127.0.0.1:50051 --workload publish --events 20000 --subject bench.a
//     node loadgen.js --target ... --workload publish-batch --events 20000 --subject bench.a
//     node loadgen.js --target ... --workload consume --events 20000 --stream S --consumers c1,c2
//     node loadgen.js --target ... --workload consume --max-batch 100 ...
//
// Workloads:
//   publish        unary PublishEvent calls, --in-flight (128) outstanding over --channels (4)
//   publish-batch  PublishEvents calls of --batch (100) events, --in-flight (8) outstanding
//   consume        one Events call per consumer of --consumers, each on its own channel,
//                  receiving and acking --events events (ids acked --ack-batch (64) at a time,
//                  --max-processing (256) unsettled at most, --max-batch to get batches)
//
// --events is the count per consumer for consume, the total for the publish
// workloads. Each channel gets a connection of its own (a local subchannel
// pool), so several channels reach several `serve --workers` processes.
//
// It prints one line of JSON: {"workload", "events", "expected", "seconds",
// "errors", ...}: events are the distinct ids answered (publish) or the
// distinct events acknowledged (consume), seconds the time from the first
// call (or the first Subscribed) to the last answer. It exits 0 when events
// equals expected and nothing failed, 2 when a count is off, 1 on a fatal error.
"use strict";

const path = require("node:path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const STRING_VALUE = "type.googleapis.com/google.protobuf.StringValue";
const DEFAULTS = {
  target: "127.0.0.1:50051",
  workload: "publish",
  events: 20000,
  subject: "bench.node",
  stream: "",
  consumers: "",
  channels: 4,
  "in-flight": 0, // 0: the workload's own default
  batch: 100,
  "max-batch": 0,
  "max-processing": 256,
  "ack-batch": 64,
  "body-bytes": 100,
  "body-base64": "", // the exact body (a serialized StringValue); else one of --body-bytes
  timeout: 120,
};
const NUMBERS = new Set([
  "events",
  "channels",
  "in-flight",
  "batch",
  "max-batch",
  "max-processing",
  "ack-batch",
  "body-bytes",
  "timeout",
]);

function parseArgs(argv) {
  const options = { ...DEFAULTS };
  for (let i = 0; i < argv.length; i += 2) {
    const name = argv[i].replace(/^--/, "");
    const value = argv[i + 1];
    if (!(name in DEFAULTS) || !argv[i].startsWith("--") || value === undefined) {
      throw new Error(`unknown option or missing value: ${argv[i]}`);
    }
    if (NUMBERS.has(name)) {
      const number = Number(value);
      if (!Number.isInteger(number) || number < 0) {
        throw new Error(`--${name} takes a whole number >= 0, not ${JSON.stringify(value)}`);
      }
      options[name] = number;
    } else {
      options[name] = value;
    }
  }
  if (!["publish", "publish-batch", "consume"].includes(options.workload)) {
    throw new Error(`--workload: publish, publish-batch or consume, not ${options.workload}`);
  }
  if (options.workload === "consume" && (!options.stream || !options.consumers)) {
    throw new Error("--workload consume needs --stream and --consumers");
  }
  return options;
}

function loadEventsService() {
  const definition = protoLoader.loadSync("windshift/events/v1alpha1/service.proto", {
    includeDirs: [path.join(__dirname, "..", "..", "proto")],
    keepCase: true,
    longs: Number, // event ids are stream sequences: far below 2^53, and cheaper than strings
    enums: String,
    defaults: false,
    arrays: true,
    oneofs: true,
  });
  return grpc.loadPackageDefinition(definition).windshift.events.v1alpha1.EventsService;
}

// The body: a google.protobuf.StringValue of --body-bytes (100) bytes serialized, as the
// Python clients send, or the bytes given with --body-base64.
function body(options) {
  if (options["body-base64"]) {
    return { type_url: STRING_VALUE, value: Buffer.from(options["body-base64"], "base64") };
  }
  return stringValue(Math.max(0, options["body-bytes"] - (options["body-bytes"] > 129 ? 3 : 2)));
}

function stringValue(size) {
  const length = [];
  let n = size;
  while (n > 0x7f) {
    length.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  length.push(n);
  return { type_url: STRING_VALUE, value: Buffer.concat([Buffer.from([0x0a, ...length]), Buffer.alloc(size, "x")]) };
}

function clients(EventsService, options, count) {
  // A local subchannel pool per client: its own TCP connection, so that the
  // kernel's SO_REUSEPORT spreads the channels over the server's workers.
  return Array.from(
    { length: count },
    () =>
      new EventsService(options.target, grpc.credentials.createInsecure(), {
        "grpc.use_local_subchannel_pool": 1,
      }),
  );
}

function unary(client, method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, (error, response) => (error ? reject(error) : resolve(response)));
  });
}

async function publish(EventsService, options, result) {
  const stubs = clients(EventsService, options, options.channels);
  const request = { subject: options.subject, data: body(options) };
  const inFlight = options["in-flight"] || 128;
  const ids = new Set();
  let next = 0;
  const firstError = [];
  async function worker(index) {
    const stub = stubs[index % stubs.length];
    while (next < options.events) {
      next += 1;
      try {
        ids.add((await unary(stub, "PublishEvent", request)).id);
      } catch (error) {
        result.errors += 1;
        if (firstError.length === 0) firstError.push(error.details || error.message);
      }
    }
  }
  const started = process.hrtime.bigint();
  await Promise.all(Array.from({ length: Math.min(inFlight, options.events) }, (_, i) => worker(i)));
  result.seconds = Number(process.hrtime.bigint() - started) / 1e9;
  result.events = ids.size;
  if (firstError.length) result.first_error = firstError[0];
  for (const stub of stubs) stub.close();
}

async function publishBatch(EventsService, options, result) {
  const stubs = clients(EventsService, options, options.channels);
  const event = { subject: options.subject, data: body(options) };
  const inFlight = options["in-flight"] || 8;
  const sizes = [];
  for (let left = options.events; left > 0; left -= options.batch) sizes.push(Math.min(left, options.batch));
  const ids = new Set();
  const firstError = [];
  async function worker(index) {
    const stub = stubs[index % stubs.length];
    while (sizes.length) {
      const size = sizes.pop();
      try {
        const answer = await unary(stub, "PublishEvents", { events: new Array(size).fill(event) });
        for (const one of answer.results) {
          if (one.result === "id") ids.add(one.id);
          else {
            result.errors += 1;
            if (firstError.length === 0) firstError.push(one.error.message);
          }
        }
      } catch (error) {
        result.errors += size;
        if (firstError.length === 0) firstError.push(error.details || error.message);
      }
    }
  }
  const started = process.hrtime.bigint();
  await Promise.all(Array.from({ length: inFlight }, (_, i) => worker(i)));
  result.seconds = Number(process.hrtime.bigint() - started) / 1e9;
  result.events = ids.size;
  if (firstError.length) result.first_error = firstError[0];
  for (const stub of stubs) stub.close();
}

// One Events call on `stub` taking `count` events of `consumer`; resolves with its counts.
function consumeOne(stub, options, consumer, count) {
  return new Promise((resolve, reject) => {
    const call = stub.Events();
    const seen = new Set();
    let received = 0;
    let acked = 0;
    let pending = [];
    let started = null;
    let done = false;
    const ackBatch = options["ack-batch"];
    function take(events) {
      // (The no-op server streams events without end: only the first `count` are taken.)
      for (const event of events) {
        if (received >= count) break;
        received += 1;
        seen.add(event.id);
        pending.push(event.id);
      }
      if (pending.length && (pending.length >= ackBatch || received >= count)) {
        call.write({ ack: { ids: pending } });
        pending = [];
      }
    }
    call.on("data", (response) => {
      if (done) return;
      switch (response.response) {
        case "subscribed":
          started = process.hrtime.bigint();
          break;
        case "event":
          take([response.event]);
          break;
        case "events":
          take(response.events.events);
          break;
        case "ack_confirmation": {
          const confirmation = response.ack_confirmation;
          acked += confirmation.ids.length;
          if (confirmation.temporary_failed_ids.length) {
            call.write({ ack: { ids: confirmation.temporary_failed_ids } });
          }
          if (acked >= count) {
            done = true;
            const finished = process.hrtime.bigint();
            call.cancel();
            resolve({ received, distinct: seen.size, acked, started, finished });
          }
          break;
        }
        default:
          break;
      }
    });
    call.on("error", (error) => {
      if (!done) reject(error);
    });
    call.on("status", (status) => {
      if (!done && status.code === grpc.status.OK) {
        done = true;
        resolve({ received, distinct: seen.size, acked, started, finished: process.hrtime.bigint() });
      }
    });
    const subscribe = { stream: options.stream, consumer, max_processing_events: options["max-processing"] };
    if (options["max-batch"]) subscribe.max_batch = options["max-batch"];
    call.write({ subscribe });
  });
}

async function consume(EventsService, options, result) {
  const consumers = options.consumers.split(",").filter(Boolean);
  const stubs = clients(EventsService, options, consumers.length);
  result.expected = options.events * consumers.length;
  const runs = await Promise.all(
    consumers.map((consumer, i) =>
      consumeOne(stubs[i], options, consumer, options.events).catch((error) => {
        result.errors += 1;
        result.first_error = error.details || error.message;
        return null;
      }),
    ),
  );
  const finished = runs.filter(Boolean);
  result.received = finished.reduce((sum, run) => sum + run.received, 0);
  result.acked = finished.reduce((sum, run) => sum + run.acked, 0);
  result.events = finished.reduce((sum, run) => sum + Math.min(run.distinct, run.acked), 0);
  const starts = finished.map((run) => run.started).filter((stamp) => stamp !== null);
  if (starts.length) {
    const first = starts.reduce((a, b) => (a < b ? a : b));
    const last = finished.map((run) => run.finished).reduce((a, b) => (a > b ? a : b));
    result.seconds = Number(last - first) / 1e9;
  }
  for (const stub of stubs) stub.close();
}

async function main() {
  const options = parseArgs(process.argv.slice(2));
  const EventsService = loadEventsService();
  const result = {
    client: "node",
    workload: options.workload,
    events: 0,
    expected: options.events,
    seconds: 0,
    errors: 0,
  };
  if (options["max-batch"]) result.max_batch = options["max-batch"];
  const timer = setTimeout(() => {
    result.errors += 1;
    result.first_error = `timed out after ${options.timeout}s`;
    console.log(JSON.stringify(result));
    process.exit(2);
  }, options.timeout * 1000);
  const run = { publish, "publish-batch": publishBatch, consume }[options.workload];
  await run(EventsService, options, result);
  clearTimeout(timer);
  console.log(JSON.stringify(result));
  process.exitCode = result.events === result.expected && result.errors === 0 ? 0 : 2;
}

main().catch((error) => {
  console.error(`error: ${error.message}`);
  process.exit(1);
});

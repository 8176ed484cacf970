// Use the Windshift gRPC API from Node.js, with @grpc/grpc-js and @grpc/proto-loader.
//
// Start a server first (in another terminal, from the repository root):
//
//     windshift-grpc serve
//
// then, in this directory:
//
//     npm ci
//     node index.js --target 127.0.0.1:8080
//
// It ensures the stream "greetings" (subjects "greetings.>") and the durable
// consumer "node-greeter", publishes three events (the first with
// PublishEvent, the other two together with PublishEvents), receives them
// through the bidirectional Events call (with max_batch: events that are ready
// together come in one message), acknowledges them and exits 0. The .proto
// files are loaded straight from ../../proto: no code generation step.
"use strict";

const path = require("node:path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const STREAM = "greetings";
const CONSUMER = "node-greeter";
const TIMEOUT_MS = 20000;
const STRING_VALUE = "type.googleapis.com/google.protobuf.StringValue";

function parseTarget(argv) {
  const index = argv.indexOf("--target");
  return index >= 0 && argv[index + 1] ? argv[index + 1] : "127.0.0.1:8080";
}

function loadEventsService() {
  const definition = protoLoader.loadSync("windshift/events/v1alpha1/service.proto", {
    includeDirs: [path.join(__dirname, "..", "..", "proto")],
    keepCase: true, // field names as in the .proto: max_processing_events, from, ...
    longs: String, // uint64 ids as decimal strings, so no precision is lost
    enums: String,
    defaults: false,
    arrays: true, // empty repeated fields as [] rather than left out
    oneofs: true, // tells which member of a oneof is set
  });
  return grpc.loadPackageDefinition(definition).windshift.events.v1alpha1.EventsService;
}

// The event data is a google.protobuf.Any. This example puts a
// google.protobuf.StringValue in it, encoded by hand (field 1, a string), so
// that it needs no further library; real code would use its own messages.
function packString(text) {
  const bytes = Buffer.from(text, "utf8");
  const length = [];
  let n = bytes.length;
  while (n > 0x7f) {
    length.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  length.push(n);
  return { type_url: STRING_VALUE, value: Buffer.concat([Buffer.from([0x0a, ...length]), bytes]) };
}

function unpackString(any) {
  if (any.type_url !== STRING_VALUE) return `(${any.type_url})`;
  const bytes = any.value;
  let offset = 1; // skip the tag of field 1
  let length = 0;
  for (let shift = 0; ; shift += 7) {
    const byte = bytes[offset++];
    length |= (byte & 0x7f) << shift;
    if (byte < 0x80) break;
  }
  return bytes.subarray(offset, offset + length).toString("utf8");
}

// Promise wrapper of one unary call.
function call(client, method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, (error, response) => (error ? reject(error) : resolve(response)));
  });
}

function consume(client, waiting) {
  return new Promise((resolve, reject) => {
    const events = client.Events();
    events.on("data", (response) => {
      switch (response.response) {
        case "subscribed":
          console.log(
            `subscribed; each event must be settled within ${response.subscribed.processing_timeout.seconds}s`,
          );
          break;
        case "event": // what a client that leaves max_batch out receives
        case "events": {
          // With max_batch set, every event comes in `events`: one or more.
          const batch = response.response === "event" ? [response.event] : response.events.events;
          if (response.response === "events") console.log(`received a batch of ${batch.length} event(s)`);
          for (const event of batch) {
            console.log(
              `received event ${event.id} on ${event.subject} ` +
                `(delivery attempt ${event.delivery_attempt}): ${unpackString(event.data)}`,
            );
          }
          // One ack for the whole batch: each id is settled on its own.
          events.write({ ack: { ids: batch.map((event) => event.id) } });
          break;
        }
        case "ack_confirmation": {
          const confirmation = response.ack_confirmation;
          for (const id of confirmation.ids) {
            console.log(`acknowledged event ${id}`);
            waiting.delete(id);
          }
          if (confirmation.temporary_failed_ids.length > 0) {
            events.write({ ack: { ids: confirmation.temporary_failed_ids } }); // try again
          }
          if (waiting.size === 0) events.end(); // done: half-close, the server ends the call
          break;
        }
        default:
          break;
      }
    });
    events.on("error", reject);
    events.on("status", (status) => {
      if (status.code === grpc.status.OK) resolve();
    });
    // max_batch: up to 10 ready events per message; the server never waits to fill one.
    events.write({
      subscribe: { stream: STREAM, consumer: CONSUMER, max_processing_events: 10, max_batch: 10 },
    });
  });
}

async function main() {
  const target = parseTarget(process.argv);
  const EventsService = loadEventsService();
  const client = new EventsService(target, grpc.credentials.createInsecure());
  const timer = setTimeout(() => {
    console.error(`error: the events did not arrive within ${TIMEOUT_MS / 1000}s`);
    process.exit(1);
  }, TIMEOUT_MS);

  // 1. A stream that collects every subject under greetings.
  await call(client, "EnsureStream", { name: STREAM, subjects: { subjects: [`${STREAM}.>`] } });
  // 2. A durable consumer; created before publishing, it starts with new events.
  const consumer = await call(client, "EnsureConsumer", {
    stream: STREAM,
    name: CONSUMER,
    subjects: [`${STREAM}.>`],
    processing_timeout: { seconds: 30 },
  });
  console.log(`stream ${STREAM} and consumer ${consumer.id} are ready`);

  // 3. Publish three events: one with PublishEvent, which answers its id ...
  const greetings = [1, 2, 3].map((number) => ({
    subject: `${STREAM}.hello`,
    data: packString(`hello #${number} from Node.js`),
  }));
  const waiting = new Set();
  const first = await call(client, "PublishEvent", greetings[0]);
  waiting.add(first.id);
  console.log(`published event ${first.id}`);
  // ... and two in one PublishEvents call, which answers one result per event,
  // in order: its id, or its own status (one refused event does not stop the others).
  const batch = await call(client, "PublishEvents", { events: greetings.slice(1) });
  console.log(`published ${batch.results.length} events in one PublishEvents call`);
  for (const result of batch.results) {
    if (result.result === "id") {
      waiting.add(result.id);
      console.log(`published event ${result.id}`);
    } else {
      console.log(`an event was refused: ${grpc.status[result.error.code]}: ${result.error.message}`);
    }
  }

  // 4. Consume and acknowledge them.
  await consume(client, waiting);
  console.log("all events acknowledged");
  clearTimeout(timer);
  client.close();
}

main().catch((error) => {
  console.error(`error: ${error.code !== undefined ? grpc.status[error.code] + ": " : ""}${error.details || error.message}`);
  process.exit(1);
});

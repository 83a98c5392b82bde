// One fan from sign-up to held seats, through a client generated from onsale's
// /openapi.json: `openapi-typescript` writes src/schema.d.ts, `tsc` type-checks this
// file against it (a wrong path, field or state name does not compile), and
// openapi-fetch makes the calls.
//
//   npx openapi-typescript $BASE_URL/openapi.json -o src/schema.d.ts && npx tsc -p .
//   BASE_URL=http://127.0.0.1:8080 EVENT_ID=... node dist/fan.js
//
// The event's sale must be open and a booking worker running. Prints one JSON line
// with the held request; exits 1 with the reason otherwise.

import createClient from "openapi-fetch";
import type { components, paths } from "./schema.js";

type RequestStatus = components["schemas"]["RequestStatus"];

const baseUrl = process.env.BASE_URL;
const eventId = process.env.EVENT_ID;
if (!baseUrl || !eventId) {
  console.error("set BASE_URL and EVENT_ID");
  process.exit(1);
}

function fail(what: string, answer: { response: Response; error?: unknown }): never {
  console.error(`${what}: ${answer.response.status} ${JSON.stringify(answer.error ?? null)}`);
  process.exit(1);
}

const client = createClient<paths>({ baseUrl });
const email = `client-${Date.now()}-${Math.random().toString(16).slice(2)}@example.com`;
const password = "a generated client's password";

const registered = await client.POST("/v1/auth/register", { body: { email, password } });
if (!registered.data) fail("register", registered);

const login = await client.POST("/v1/auth/login", { body: { email, password } });
if (!login.data) fail("login", login);
const headers = { Authorization: `${login.data.token_type} ${login.data.access_token}` };

const joined = await client.POST("/v1/events/{event_id}/requests", {
  params: {
    path: { event_id: eventId },
    header: { "Idempotency-Key": `client-join-${Date.now()}` },
  },
  body: { quantity: 2 },
  headers,
});
if (!joined.data) fail("join", joined);
const requestId = joined.data.request_id;

let status: RequestStatus | undefined;
const deadline = Date.now() + 30_000;
for (;;) {
  const read = await client.GET("/v1/requests/{request_id}", {
    params: { path: { request_id: requestId } },
    headers,
  });
  if (!read.data) fail("read the request", read);
  status = read.data;
  if (status.state === "held") break;
  if (status.state !== "queued" && status.state !== "prequeue") {
    console.error(`the request went ${status.state} instead of held: ${JSON.stringify(status)}`);
    process.exit(1);
  }
  if (Date.now() > deadline) {
    console.error(`not held within 30 s: ${JSON.stringify(status)}`);
    process.exit(1);
  }
  await new Promise((resolve) => setTimeout(resolve, 100)); // a polling interval
}
console.log(JSON.stringify({ request_id: requestId, state: status.state, seats: status.seats }));

// The Windshift console: a small page over /console/api, with no library and no
// request beyond this server. Every text from the server is set as text (never as
// HTML). The token stays in this tab's sessionStorage and goes in the Authorization
// header only, never in a URL.
"use strict";

const TOKEN_KEY = "windshift-console-token";
const REFRESH_MS = 2000;
const HOUR = 3600;

let session = null;
let timer = null;
let rendering = 0;

// --- small helpers ------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

function svg(tag, attrs, ...children) {
  const element = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attrs || {})) element.setAttribute(name, String(value));
  for (const child of children) {
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

function link(text, ...path) {
  return h("a", { href: "#/" + path.map(encodeURIComponent).join("/") }, text);
}

function number(value) {
  return value === null || value === undefined ? "–" : Number(value).toLocaleString("en");
}

function bytes(value) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let size = Number(value);
  let unit = 0;
  while (size >= 1024 && unit < units.length - 1) {
    size /= 1024;
    unit += 1;
  }
  return (unit ? size.toFixed(1) : String(size)) + " " + units[unit];
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Number(seconds);
  if (s < 1) return s === 0 ? "0 s" : s.toFixed(2) + " s";
  if (s < 120) return s.toFixed(Number.isInteger(s) ? 0 : 1) + " s";
  if (s < 7200) return (s / 60).toFixed(s % 60 < 1 ? 0 : 1) + " min";
  if (s < 172800) return (s / 3600).toFixed(1) + " h";
  return (s / 86400).toFixed(1) + " d";
}

function when(text) {
  if (!text) return "–";
  const date = new Date(text);
  return isNaN(date) ? text : date.toLocaleString();
}

function table(headings, rows, attrs) {
  return h(
    "div",
    { class: "scroll" },
    h(
      "table",
      attrs || {},
      h("thead", {}, h("tr", {}, headings.map(([label, cls]) => h("th", { class: cls || null }, label)))),
      h("tbody", {}, rows),
    ),
  );
}

function cell(value, cls, attrs) {
  return h("td", Object.assign({ class: cls || null }, attrs || {}), value);
}

function pretty(data, compact) {
  if (!data) return h("p", { class: "muted" }, "no data");
  if (data.decoded) {
    const short = JSON.stringify(data.json);
    const text = compact && short.length <= 160 ? short : JSON.stringify(data.json, null, 2);
    return h("pre", { class: "data" }, text);
  }
  return h(
    "div",
    {},
    h("p", { class: "muted" }, data.note),
    data.base64 ? h("pre", { class: "data" }, "base64: " + data.base64) : null,
  );
}

function headers(map) {
  return h(
    "dl",
    { class: "facts" },
    Object.entries(map || {}).flatMap(([name, value]) => [h("dt", { class: "mono" }, name), h("dd", { class: "mono" }, value)]),
  );
}

function facts(pairs) {
  return h(
    "dl",
    { class: "facts" },
    pairs.flatMap(([name, value]) => [h("dt", {}, name), h("dd", {}, value)]),
  );
}

function status(text, bad) {
  const element = document.getElementById("status");
  element.textContent = text;
  element.className = bad ? "error" : "";
}

// --- the API --------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(path, options) {
  const requestHeaders = { "X-Windshift-Console": "1", Accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) requestHeaders.Authorization = "Bearer " + token;
  const response = await fetch("api/" + path, {
    method: (options && options.method) || "GET",
    headers: requestHeaders,
    credentials: "omit",
    cache: "no-store",
    referrerPolicy: "no-referrer",
  });
  let body = null;
  try {
    body = await response.json();
  } catch (error) {
    body = null;
  }
  if (!response.ok) {
    const message = (body && body.error) || response.status + " " + response.statusText;
    if (response.status === 401) signOut(message);
    throw new ApiError(response.status, message);
  }
  return body;
}

// --- pages ----------------------------------------------------------------------------

async function streamsPage() {
  const answer = await api("streams");
  const rows = answer.streams.map((stream) =>
    h(
      "tr",
      { "data-stream": stream.name },
      cell(link(stream.name, "streams", stream.name)),
      cell(stream.subjects.join(", ") || "–", "mono optional"),
      cell(number(stream.events), "num events"),
      cell(bytes(stream.bytes), "num optional"),
      cell(when(stream.first_time), "optional"),
      cell(when(stream.last_time)),
      cell(number(stream.consumers), "num"),
      cell([stream.retention, stream.dead_letter_stream ? " " : null, stream.dead_letter_stream ? h("span", { class: "badge" }, "dead letters") : null], "optional"),
    ),
  );
  return [
    h("h1", {}, "Streams"),
    rows.length
      ? table(
          [["Name"], ["Subjects", "optional"], ["Events", "num"], ["Bytes", "num optional"], ["First event", "optional"], ["Last event"], ["Consumers", "num"], ["Retention", "optional"]],
          rows,
          { class: "wide", id: "streams" },
        )
      : h("p", { class: "muted" }, "No stream this token may see."),
  ];
}

async function streamPage(name, before) {
  const answer = await api("streams/" + encodeURIComponent(name));
  const stream = answer.stream;
  const parts = [
    h("h1", {}, "Stream ", h("span", { class: "mono" }, stream.name)),
    h(
      "div",
      { class: "card" },
      facts([
        ["Subjects", stream.subjects.join(", ") || "–"],
        ["Events", h("span", { id: "stream-events" }, number(stream.events))],
        ["Bytes", bytes(stream.bytes)],
        ["Ids", stream.first_id + " to " + stream.last_id],
        ["First event", when(stream.first_time)],
        ["Last event", when(stream.last_time)],
        ["Retention", stream.retention + (stream.max_age ? ", " + duration(stream.max_age) : "")],
        ["Storage", stream.storage],
      ]),
    ),
    h("h2", {}, "Consumers"),
    answer.consumers.length
      ? table(
          [["Consumer"], ["Pending", "num"], ["Unacknowledged", "num"], ["Redelivered", "num optional"], ["Ack floor", "num optional"], ["Lag (time)", "num"], ["Dead letters to", "optional"]],
          answer.consumers.map((c) =>
            h(
              "tr",
              {},
              cell(c.id, "mono"),
              cell(number(c.pending), "num"),
              cell(number(c.unacknowledged), "num"),
              cell(number(c.redelivered), "num optional"),
              cell(number(c.ack_floor), "num optional"),
              cell(duration(c.lag_seconds), "num"),
              cell(c.dead_letter_stream ? link(c.dead_letter_stream, "dead-letters", c.dead_letter_stream) : "–", "optional"),
            ),
          ),
          { class: "wide" },
        )
      : h("p", { class: "muted" }, "No consumers."),
    h("h2", {}, "Events, newest first"),
  ];
  if (!stream.may_read) {
    parts.push(h("p", { class: "muted" }, "This token may not read the events of this stream (it needs consume)."));
    return parts;
  }
  const query = "limit=20" + (before ? "&before=" + encodeURIComponent(before) : "");
  const page = await api("streams/" + encodeURIComponent(name) + "/events?" + query);
  const list = h(
    "div",
    { class: "card", id: "events" },
    page.events.length ? null : h("p", { class: "muted" }, "No events" + (before ? " before " + before : "") + "."),
    page.events.map((event) =>
      h(
        "div",
        { class: "event", "data-event": event.id },
        h(
          "div",
          { class: "event-head" },
          h("strong", {}, "#" + event.id),
          h("span", { class: "mono" }, event.subject),
          h("span", {}, when(event.time)),
          h("span", { class: "mono muted" }, event.type || "no type"),
          h("span", { class: "muted" }, bytes(event.size)),
          event.idempotency_key ? h("span", { class: "muted" }, "key " + event.idempotency_key) : null,
        ),
        pretty(event.data, true),
      ),
    ),
  );
  parts.push(list);
  const nav = h("div", { class: "actions" });
  if (before) nav.append(h("a", { class: "button secondary", href: "#/streams/" + encodeURIComponent(name) }, "Newest"));
  if (page.events.length) {
    const last = page.events[page.events.length - 1].id;
    if (last > 1) nav.append(h("a", { class: "button secondary", href: "#/streams/" + encodeURIComponent(name) + "?before=" + last }, "Older"));
  }
  parts.push(nav);
  return parts;
}

function chart(title, history, interval) {
  // Two lines over the last hour: lag in events (solid, left scale) and in time
  // (dashed, right scale). history: [[at, events, seconds], ...], oldest first.
  const width = 600;
  const height = 180;
  const left = 44;
  const right = 56;
  const top = 12;
  const bottom = 24;
  const now = history.length ? Math.max(history[history.length - 1][0], Date.now() / 1000) : Date.now() / 1000;
  // The last hour, or since the first sample when the server has sampled for less.
  const first = history.length ? history[0][0] : now - HOUR;
  const span = Math.min(HOUR, Math.max(60, now - first));
  const start = now - span;
  const shown = history.filter((point) => point[0] >= start);
  const maxEvents = Math.max(1, ...shown.map((point) => point[1]));
  const maxSeconds = Math.max(1, ...shown.map((point) => point[2]));
  const x = (at) => left + ((at - start) / span) * (width - left - right);
  const yEvents = (value) => top + (1 - value / maxEvents) * (height - top - bottom);
  const ySeconds = (value) => top + (1 - value / maxSeconds) * (height - top - bottom);
  const line = (y, index) => shown.map((point) => x(point[0]).toFixed(1) + "," + y(point[index]).toFixed(1)).join(" ");
  const picture = svg(
    "svg",
    { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": title + ": lag over the last " + duration(span) },
    svg("line", { class: "axis", x1: left, y1: height - bottom, x2: width - right, y2: height - bottom }),
    svg("line", { class: "axis", x1: left, y1: top, x2: left, y2: height - bottom }),
    svg("line", { class: "axis", x1: width - right, y1: top, x2: width - right, y2: height - bottom }),
    svg("text", { x: left - 4, y: top + 8, "text-anchor": "end" }, number(maxEvents)),
    svg("text", { x: left - 4, y: height - bottom, "text-anchor": "end" }, "0"),
    svg("text", { x: width - right + 4, y: top + 8 }, duration(maxSeconds)),
    svg("text", { x: width - right + 4, y: height - bottom }, "0 s"),
    svg("text", { x: left, y: height - 6 }, "−" + duration(span)),
    svg("text", { x: (left + width - right) / 2, y: height - 6, "text-anchor": "middle" }, "−" + duration(span / 2)),
    svg("text", { x: width - right, y: height - 6, "text-anchor": "end" }, "now"),
  );
  if (shown.length > 1) {
    picture.append(svg("polyline", { class: "events", points: line(yEvents, 1) }));
    picture.append(svg("polyline", { class: "seconds", points: line(ySeconds, 2) }));
  } else if (shown.length === 1) {
    picture.append(svg("circle", { cx: x(shown[0][0]), cy: yEvents(shown[0][1]), r: 3, fill: "currentColor" }));
  }
  return h(
    "div",
    { class: "chart" },
    h("h3", {}, title),
    picture,
    h("div", { class: "legend" }, h("span", { class: "events" }, "events behind"), h("span", { class: "seconds" }, "time behind"), h("span", { class: "muted" }, "a sample every " + duration(interval))),
  );
}

async function consumersPage() {
  const answer = await api("consumers");
  const rows = answer.consumers.map((c) =>
    h(
      "tr",
      { "data-consumer": c.stream + "/" + c.consumer },
      cell(link(c.stream, "streams", c.stream)),
      cell(c.consumer, "mono"),
      cell(number(c.pending), "num optional pending"),
      cell(number(c.unacknowledged), "num optional unacknowledged"),
      cell(number(c.redelivered), "num optional"),
      cell(number(c.ack_floor), "num optional ack-floor"),
      cell(number(c.lag_events), "num lag-events" + (c.lag_events ? " behind" : "")),
      cell(duration(c.lag_seconds), "num lag-seconds" + (c.lag_seconds ? " behind" : "")),
      cell(c.dead_letter_stream ? link(c.dead_letter_stream, "dead-letters", c.dead_letter_stream) : "–", "optional"),
    ),
  );
  return [
    h("h1", {}, "Consumers"),
    h("p", { class: "muted" }, answer.sampled_at ? "Sampled by the server every " + duration(answer.interval) + "; last at " + new Date(answer.sampled_at * 1000).toLocaleTimeString() + "." : "Not sampled yet."),
    rows.length
      ? table(
          [["Stream"], ["Consumer"], ["Pending", "num optional"], ["Unacknowledged", "num optional"], ["Redelivered", "num optional"], ["Ack floor", "num optional"], ["Lag (events)", "num"], ["Lag (time)", "num"], ["Dead letters to", "optional"]],
          rows,
          { class: "wide", id: "consumers" },
        )
      : h("p", { class: "muted" }, "No consumer this token may see."),
    rows.length ? h("h2", {}, "Lag over the last hour") : null,
    h("div", { class: "charts" }, answer.consumers.map((c) => chart(c.stream + " / " + c.consumer, c.history, answer.interval))),
  ];
}

async function deadLetterStreamsPage() {
  const answer = await api("dead-letters");
  const rows = answer.dead_letter_streams.map((stream) =>
    h("tr", { "data-dead-letters": stream.name }, cell(link(stream.name, "dead-letters", stream.name)), cell(number(stream.letters), "num letters"), cell(bytes(stream.bytes), "num")),
  );
  return [
    h("h1", {}, "Dead letters"),
    rows.length
      ? table([["Dead-letter stream"], ["Letters", "num"], ["Bytes", "num"]], rows, { id: "dead-letter-streams" })
      : h("p", { class: "muted" }, "No dead-letter stream this token may read."),
  ];
}

async function act(button, path, method, done) {
  button.disabled = true;
  try {
    const answer = await api(path, { method });
    status(done(answer));
  } catch (error) {
    status(error.message, true);
    button.disabled = false;
    throw error;
  }
  await render();
}

function manageNote(mayManage) {
  return mayManage ? null : h("p", { class: "muted", id: "read-only" }, "This token may read these letters, not replay, delete or purge them (that needs manage on the dead-letter stream).");
}

async function deadLettersPage(name) {
  const answer = await api("dead-letters/" + encodeURIComponent(name));
  const base = "dead-letters/" + encodeURIComponent(name);
  const rows = answer.letters.map((letter) =>
    h(
      "tr",
      { "data-letter": letter.id },
      cell(link("#" + letter.id, "dead-letters", name, String(letter.id))),
      cell(letter.subject, "mono"),
      cell(letter.stream + " / " + letter.consumer + " #" + letter.event_id, "optional"),
      cell(number(letter.attempts), "num"),
      cell(letter.reason),
      cell(when(letter.dead_since), "optional"),
      answer.may_manage &&
      cell(
        answer.may_manage
          ? h(
              "div",
              { class: "actions" },
              h("button", { type: "button", class: "replay", onclick: (e) => act(e.target, base + "/" + letter.id + "/replay", "POST", (a) => "Replayed letter " + a.replayed + " as event " + a.id + " of " + a.stream + ".") }, "Replay"),
              h("button", { type: "button", class: "secondary delete", onclick: (e) => confirm("Delete dead letter " + letter.id + "?") && act(e.target, base + "/" + letter.id, "DELETE", (a) => "Deleted letter " + a.deleted + ".") }, "Delete"),
            )
          : "–",
      ),
    ),
  );
  return [
    h("h1", {}, "Dead letters of ", h("span", { class: "mono" }, name)),
    manageNote(answer.may_manage),
    answer.may_manage && rows.length
      ? h("div", { class: "actions" }, h("button", { type: "button", class: "danger", id: "purge", onclick: (e) => confirm("Remove every dead letter of " + name + "?") && act(e.target, base + "/purge", "POST", (a) => "Purged " + a.purged + " letters.") }, "Purge all"))
      : null,
    rows.length
      ? table([["Id"], ["Subject"], ["From", "optional"], ["Attempts", "num"], ["Reason"], ["Dead since", "optional"], answer.may_manage ? ["Actions"] : null].filter(Boolean), rows, { class: "wide", id: "letters" })
      : h("p", { class: "muted", id: "no-letters" }, "No dead letters."),
  ];
}

async function deadLetterPage(name, id) {
  const answer = await api("dead-letters/" + encodeURIComponent(name) + "/" + encodeURIComponent(id));
  const letter = answer.letter;
  const base = "dead-letters/" + encodeURIComponent(name) + "/" + letter.id;
  const back = () => {
    location.hash = "#/dead-letters/" + encodeURIComponent(name);
    return "";
  };
  return [
    h("h1", {}, "Dead letter " + letter.id + " of ", h("span", { class: "mono" }, name)),
    manageNote(answer.may_manage),
    answer.may_manage
      ? h(
          "div",
          { class: "actions" },
          h("button", { type: "button", class: "replay", onclick: (e) => act(e.target, base + "/replay", "POST", (a) => (back(), "Replayed letter " + a.replayed + " as event " + a.id + " of " + a.stream + ".")) }, "Replay"),
          h("button", { type: "button", class: "secondary delete", onclick: (e) => confirm("Delete dead letter " + letter.id + "?") && act(e.target, base, "DELETE", (a) => (back(), "Deleted letter " + a.deleted + ".")) }, "Delete"),
        )
      : null,
    h(
      "div",
      { class: "card" },
      facts([
        ["Subject", letter.subject],
        ["From", letter.stream + " / " + letter.consumer + ", event " + letter.event_id],
        ["Attempts", number(letter.attempts)],
        ["Reason", letter.reason],
        ["Dead since", when(letter.dead_since)],
        ["Published", when(letter.published)],
        ["Type", letter.type || "–"],
        ["Size", bytes(letter.size)],
      ]),
    ),
    h("h2", {}, "Data"),
    pretty(letter.data),
    h("h2", {}, "Headers"),
    h("div", { class: "card" }, headers(letter.headers)),
  ];
}

async function storesPage() {
  const answer = await api("stores");
  return [
    h("h1", {}, "State stores"),
    answer.stores.length
      ? table([["Store"]], answer.stores.map((name) => h("tr", { "data-store": name }, cell(link(name, "stores", name)))), { id: "stores" })
      : h("p", { class: "muted" }, "No state store this token may read."),
  ];
}

async function storePage(name, pattern) {
  const answer = await api("stores/" + encodeURIComponent(name) + "/keys?pattern=" + encodeURIComponent(pattern || ">"));
  const search = h("input", { type: "search", name: "pattern", value: pattern || "", placeholder: "key pattern, e.g. cart.*", "aria-label": "key pattern" });
  const form = h(
    "form",
    {
      class: "actions",
      onsubmit: (e) => {
        e.preventDefault();
        location.hash = "#/stores/" + encodeURIComponent(name) + (search.value ? "?pattern=" + encodeURIComponent(search.value) : "");
      },
    },
    search,
    h("button", { type: "submit", class: "secondary" }, "Filter"),
  );
  return [
    h("h1", {}, "Store ", h("span", { class: "mono" }, name)),
    form,
    answer.keys.length
      ? table([["Key (last written first)"]], answer.keys.map((key) => h("tr", { "data-key": key }, cell(link(key, "stores", name, key), "mono"))), { id: "keys" })
      : h("p", { class: "muted" }, "No key holds a value."),
    answer.truncated ? h("p", { class: "muted" }, "Only the last written keys are shown: narrow the pattern.") : null,
  ];
}

async function keyPage(name, key) {
  const answer = await api("stores/" + encodeURIComponent(name) + "/entry?key=" + encodeURIComponent(key));
  const current = answer.history.length ? answer.history[0] : null;
  return [
    h("h1", {}, h("span", { class: "mono" }, key), " in ", link(name, "stores", name)),
    h("h2", {}, "Value"),
    !current
      ? h("p", { class: "muted" }, "The store keeps no value of this key.")
      : current.operation === "delete"
        ? h("p", { class: "muted" }, "Deleted at revision " + current.revision + ".")
        : h("div", { id: "value" }, h("p", { class: "muted" }, "Revision " + current.revision + ", " + when(current.updated) + ", " + (current.type || "")), current.json === null ? h("p", { class: "muted" }, "Its type is unknown to the server.") : h("pre", { class: "data" }, JSON.stringify(current.json, null, 2))),
    h("h2", {}, "History (newest first)"),
    table(
      [["Revision", "num"], ["Change"], ["When"], ["Value"]],
      answer.history.map((change) => h("tr", { "data-revision": change.revision }, cell(number(change.revision), "num"), cell(change.operation), cell(when(change.updated)), cell(change.json === null ? (change.operation === "delete" ? "–" : "unknown type") : h("code", {}, JSON.stringify(change.json))))),
      { id: "history" },
    ),
  ];
}

// --- routing, refresh, sign-in ---------------------------------------------------------

function route() {
  const [path, query] = (location.hash.replace(/^#\/?/, "") || "streams").split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const params = new URLSearchParams(query || "");
  const [section, name, id] = parts;
  if (section === "streams" && name) return ["streams", () => streamPage(name, params.get("before"))];
  if (section === "consumers") return ["consumers", consumersPage];
  if (section === "dead-letters" && name && id) return ["dead-letters", () => deadLetterPage(name, id)];
  if (section === "dead-letters" && name) return ["dead-letters", () => deadLettersPage(name)];
  if (section === "dead-letters") return ["dead-letters", deadLetterStreamsPage];
  if (section === "stores" && name && parts.length > 2) return ["stores", () => keyPage(name, parts.slice(2).join("/"))];
  if (section === "stores" && name) return ["stores", () => storePage(name, params.get("pattern"))];
  if (section === "stores") return ["stores", storesPage];
  return ["streams", streamsPage];
}

async function render() {
  if (!session) return;
  const ticket = ++rendering;
  const [section, page] = route();
  for (const anchor of document.querySelectorAll("#nav a")) {
    anchor.classList.toggle("current", anchor.dataset.section === section);
  }
  let content;
  try {
    content = await page();
  } catch (error) {
    if (ticket !== rendering || !session) return;
    content = [h("p", { class: "error", id: "page-error" }, error.message)];
  }
  if (ticket !== rendering) return; // a newer render started meanwhile
  const view = document.getElementById("view");
  // Keep what is being typed into a field across a refresh.
  if (view.contains(document.activeElement) && document.activeElement.tagName === "INPUT") return;
  view.replaceChildren(...[content].flat().filter(Boolean));
  document.body.dataset.updated = String(Date.now());
}

function schedule() {
  clearInterval(timer);
  timer = setInterval(() => {
    if (!document.hidden) render();
  }, REFRESH_MS);
}

function showSignedIn() {
  document.getElementById("login").hidden = true;
  document.getElementById("nav").hidden = false;
  const who = document.getElementById("who");
  who.hidden = !session.tokens;
  document.getElementById("who-name").textContent = session.name ? "token " + session.name : "";
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  session = null;
  clearInterval(timer);
  document.getElementById("view").replaceChildren();
  document.getElementById("nav").hidden = true;
  document.getElementById("who").hidden = true;
  document.getElementById("login").hidden = false;
  document.getElementById("login-error").textContent = message || "";
  document.getElementById("token").focus();
}

async function start() {
  try {
    session = await api("session");
  } catch (error) {
    if (error.status !== 401) status(error.message, true);
    return;
  }
  showSignedIn();
  await render();
  schedule();
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const field = document.getElementById("token");
    sessionStorage.setItem(TOKEN_KEY, field.value.trim());
    field.value = "";
    await start();
  });
  document.getElementById("sign-out").addEventListener("click", () => signOut(""));
  window.addEventListener("hashchange", render);
  start();
});

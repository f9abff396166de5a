// The demo chat page served by `sealcast serve --demo`. It uses the same client library build as everyone
// else (sealcast-client.js, bundled from clients/js by `npm run bundle`).
import { connect } from "./sealcast-client.js";

const $ = (id) => document.getElementById(id);
const MAX_FRAMES = 300;
let client;
let me;
let room;
let afterConnected = false;
/** Frames after `connected` that were not `encrypted` records (never expected). */
let plaintext = 0;

/** A WebSocket that shows every frame in the wire view before the client library sees it. */
class TappedWebSocket extends WebSocket {
  constructor(url, protocols) {
    super(url, protocols);
    this.addEventListener("message", (e) => showFrame("in", e.data));
  }
  send(data) {
    showFrame("out", data);
    super.send(data);
  }
}

const short = (s, n = 16) => (s.length > n ? `${s.slice(0, n)}…` : s);
/** Long strings (keys, tokens, ciphertext) abbreviated, so a frame fits on a line or two. */
function summary(value) {
  return JSON.stringify(value, (k, v) => {
    if (k === "token" && typeof v === "string") return `${short(v, 10)} (${v.length} chars)`;
    if (typeof v === "string" && v.length > 24) return `${short(v)} (${v.length})`;
    return v;
  });
}

function showFrame(dir, raw) {
  let event = "(binary)";
  let text = "";
  if (typeof raw === "string") {
    try {
      const m = JSON.parse(raw);
      event = typeof m.event === "string" ? m.event : "(no event)";
      text = summary(m.data);
    } catch {
      event = "(not JSON)";
      text = short(raw, 60);
    }
  }
  const li = document.createElement("li");
  li.className = "frame";
  li.dataset.dir = dir;
  li.dataset.event = event;
  li.dataset.afterConnected = String(afterConnected);
  const arrow = document.createElement("span");
  arrow.className = "dir";
  arrow.textContent = dir === "out" ? "→" : "←";
  const ev = document.createElement("span");
  ev.className = "ev";
  ev.textContent = event;
  li.append(arrow, ev, text);
  const list = $("wire");
  const stick = list.scrollTop + list.clientHeight >= list.scrollHeight - 8;
  list.append(li);
  while (list.children.length > MAX_FRAMES) list.firstElementChild.remove();
  if (stick) list.scrollTop = list.scrollHeight;
  if (dir === "in" && event === "connected") afterConnected = true;
  else if (afterConnected && event !== "encrypted") plaintext++;
  updateCheck();
}

function updateCheck() {
  const counted = [...$("wire").children].filter((li) => li.dataset.afterConnected === "true").length;
  const check = $("wire-check");
  check.dataset.ok = String(plaintext === 0);
  check.textContent =
    plaintext === 0
      ? `✓ ${counted} frame${counted === 1 ? "" : "s"} after connected, all encrypted`
      : `✗ ${plaintext} plaintext frame${plaintext === 1 ? "" : "s"} after connected`;
}

function status(text, state) {
  const el = $("status");
  el.textContent = text;
  el.dataset.state = state;
}

function addMessage(kind, who, text) {
  const li = document.createElement("li");
  li.className = `msg ${kind}`;
  if (who) {
    const w = document.createElement("span");
    w.className = "who";
    w.textContent = who;
    li.append(w);
  }
  const t = document.createElement("span");
  t.className = "text";
  t.textContent = text;
  li.append(t);
  const list = $("messages");
  list.append(li);
  list.scrollTop = list.scrollHeight;
}

/** Who is in the room: client id → name (a user with several tabs is listed once). */
const members = new Map();
/** Names whose last connection just left, with the timer that will say so. */
const leaving = new Map();
const nameOf = (user) => (typeof user === "string" ? user.replace(/^demo:/, "") : "anonymous");

function renderMembers() {
  const list = $("members");
  const names = [...new Set(members.values())].sort();
  list.replaceChildren(
    ...names.map((n) => {
      const li = document.createElement("li");
      li.className = "member";
      li.dataset.name = n;
      li.textContent = n === me ? `${n} (you)` : n;
      return li;
    }),
  );
  $("member-count").textContent = `· ${names.length}`;
}

/** The member list from the server (`presence`), then kept current by `member_joined` / `member_left`. */
async function loadMembers() {
  const answer = await client.presence(room);
  members.clear();
  for (const m of answer.members) members.set(m.client, nameOf(m.user));
  renderMembers();
  if (answer.truncated) $("member-count").textContent = `· ${answer.users} (first ${answer.members.length} shown)`;
}

/** How many of a room's last messages the page shows on joining. */
const RECENT = 20;

async function grantFor(name) {
  const res = await fetch(`/demo/token?name=${encodeURIComponent(name)}`, { cache: "no-store" });
  if (!res.ok) throw new Error(await res.text());
  return res.json();
}

async function join(name, roomName) {
  const grant = await grantFor(name);
  me = name;
  room = grant.roomPrefix + roomName;
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  client = connect({
    url: `${scheme}//${location.host}${grant.wsPath}`,
    token: grant.token,
    // Demo tokens last 15 minutes: the client refreshes the session with a new one before they expire.
    getToken: async () => (await grantFor(name)).token,
    // Demo trust model: the key comes from this origin. Pin `serverKeys` in real applications.
    wellKnownUrl: "/.well-known/sealcast.json",
    WebSocket: TappedWebSocket,
  });
  client.on("connected", (info) => {
    status(`Connected as ${info.userId} in ${room} · encrypted (wsenc/1, server key ${info.kid})`, "open");
    $("text").disabled = false;
    $("send").disabled = false;
    $("text").focus();
  });
  client.on("close", ({ code, reason, willReconnect }) => {
    afterConnected = false; // a reconnect starts with a new plaintext authenticate / connected
    status(`Closed: ${code} ${reason}${willReconnect ? " · reconnecting…" : ""}`, willReconnect ? "idle" : "error");
    $("text").disabled = true;
    $("send").disabled = true;
  });
  client.on("error", (err) => addMessage("system", "", `error: ${err.serverMessage ?? err.message}`));
  // Messages older than the join (replayed from the room's history) are marked as such.
  let joinedAt;
  const earlier = (meta) => meta && joinedAt && meta.epoch === joinedAt.epoch && meta.offset <= joinedAt.offset;
  client.on("chat", (data, _event, meta) =>
    addMessage(earlier(meta) ? "history" : "theirs", String(data?.name ?? "?"), String(data?.text ?? "")),
  );
  client.on("member_joined", (data) => {
    if (data.room !== room) return;
    const name = nameOf(data.user);
    const back = leaving.get(name);
    if (back) {
      clearTimeout(back);
      leaving.delete(name);
    } else if (![...members.values()].includes(name)) {
      addMessage("system", "", `${name} joined`);
    }
    members.set(data.client, name);
    renderMembers();
  });
  client.on("member_left", (data) => {
    if (data.room !== room) return;
    const name = nameOf(data.user);
    members.delete(data.client);
    renderMembers();
    // Said only when the user's last connection left and does not come back at once (a page joining again to
    // show a room's recent messages leaves and joins).
    if (![...members.values()].includes(name) && !leaving.has(name)) {
      leaving.set(
        name,
        setTimeout(() => {
          leaving.delete(name);
          addMessage("system", "", `${name} left`);
        }, 1500),
      );
    }
  });
  // After a reconnect the list is asked for again: events in between were missed.
  client.on("rejoined", () => loadMembers().catch(() => undefined));
  const first = (await client.join(room)).rooms.find((r) => r.room === room);
  if (first && typeof first.offset === "number" && first.offset > 0) {
    // The room keeps history: join again asking for its last messages, which arrive before the answer.
    joinedAt = { offset: first.offset, epoch: first.epoch };
    await client.leave(room);
    const from = Math.max(0, first.offset - RECENT);
    const again = await client.join(room, { recover: { [room]: { offset: from, epoch: first.epoch } } });
    if (again.rooms.find((r) => r.room === room)?.recovered === false) {
      addMessage("system", "", "older messages of this room have expired");
    }
  }
  // The list is a nicety: a server whose presence.rooms leave out the demo's rooms still chats.
  await loadMembers().catch((err) => addMessage("system", "", `no member list: ${err.serverMessage ?? err.message}`));
  addMessage("system", "", `you joined ${roomName} as ${me}`);
}

$("join-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const name = $("name").value.trim();
  const roomName = $("room").value.trim();
  for (const el of $("join-form").elements) el.disabled = true;
  status("Connecting…", "idle");
  join(name, roomName).catch((err) => {
    status(`Could not join: ${err.message}`, "error");
    client?.close();
    for (const el of $("join-form").elements) el.disabled = false;
  });
});

$("send-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("text").value;
  if (!text.trim() || !client) return;
  $("text").value = "";
  addMessage("mine", me, text);
  client.publish(room, "chat", { name: me, text }).catch((err) => addMessage("system", "", `not sent: ${err.message}`));
});

updateCheck();

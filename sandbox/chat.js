// The chat page: plays LINE users against the bot behind the sandbox. Events go out through the
// sandbox (/sandbox/chats/<id>/events), which signs and posts them to the receiver; the chat's
// history (what users sent, what the bot delivered) is long-polled and drawn in time order.
import { el, json, actionLabel } from "./chat-dom.js";
import { renderMessage, senderOf, quickReplyChips } from "./chat-render.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const chatId = params.get("user") || params.get("group") || params.get("room");
const LINE_EMOJI_PRODUCT = "5ac1bfd5040ab15980c9b435";
const LINE_EMOJI = [["(smile)", "001", "😊"], ["(love)", "002", "😍"], ["(wink)", "003", "😉"],
                    ["(cry)", "004", "😢"], ["(cool)", "005", "😎"], ["(ok)", "006", "👌"]];
const STICKERS = [["446", "1988"], ["446", "1989"], ["446", "1990"], ["446", "1991"],
                  ["11537", "52002734"], ["11537", "52002735"], ["11537", "52002736"], ["11537", "52002737"]];
const MAX_UPLOAD_BYTES = 10 * 1024 * 1024;

const state = { chat: null, people: new Map(), speaker: null, items: [], seq: 0, inspecting: null,
                menuAlias: null, menuOpen: true, uploads: new Map() };

// --- talking to the sandbox ----------------------------------------------------------------------------
async function call(path, options) {
  const answer = await fetch(path, options);
  const body = await answer.json().catch(() => ({}));
  if (!answer.ok) throw new Error(body.message || `HTTP ${answer.status}`);
  return body;
}

function post(path, body) {
  return call(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
}

function notice(text) {
  const box = $("notice");
  box.textContent = text;
  box.classList.add("shown");
  clearTimeout(notice.timer);
  notice.timer = setTimeout(() => box.classList.remove("shown"), 4000);
}

// Send one event as `user` (the chosen speaker unless given). `shown` is a postback's displayText.
async function send(kind, { text, details, content, user, shown } = {}) {
  const who = user || state.speaker;
  if (!who) { notice("Choose who speaks first."); return null; }
  try {
    const answer = await post(`/sandbox/chats/${chatId}/events`, { user: who, kind, text, details, content, displayText: shown });
    if (answer.status !== 200) notice(`The receiver answered ${answer.status || "nothing"} (${answer.webhook}).`);
    return answer;
  } catch (error) {
    notice(`Not sent: ${error.message}`);
    return null;
  }
}

function nameOf(userId) {
  const person = state.people.get(userId);
  return person ? person.displayName : `User-${String(userId || "").slice(-4)}`;
}

// --- actions (buttons, Flex, quick replies, imagemaps, rich menus) ---------------------------------------
async function act(action) {
  switch (action.type) {
    case "message":
      return send("text", { text: action.text || action.label || "" });
    case "postback":
      return send("postback", { text: action.data || "", details: { postback: { data: action.data || "" } },
                                shown: action.displayText || action.text });
    case "uri":
      return openLink(action.uri);
    case "datetimepicker":
      return pickDatetime(action);
    case "camera": case "cameraRoll":
      return upload("image", "image/*");
    case "location":
      return sendLocation();
    case "richmenuswitch":
      return switchMenu(action);
    case "clipboard":
      if (navigator.clipboard) navigator.clipboard.writeText(action.clipboardText || "").catch(() => {});
      return notice("Copied to the clipboard.");
    default:
      return notice(`The ${action.type} action is not played here.`);
  }
}

function openLink(uri) {
  // http(s), tel:, mailto: and line: only: never a javascript: URL from a bot
  if (/^(https?:|tel:|mailto:|line:)/i.test(uri || "")) window.open(uri, "_blank", "noopener,noreferrer");
  else notice(`Not opened: ${uri}`);
}

async function pickDatetime(action) {
  const mode = ["date", "time", "datetime"].includes(action.mode) ? action.mode : "datetime";
  const values = await ask(`Choose a ${mode}`, [{ name: "value", type: mode === "datetime" ? "datetime-local" : mode,
                                                 value: action.initial || "", min: action.min, max: action.max }]);
  if (!values || !values.value) return;
  return send("postback", { text: action.data || "", shown: action.label,
                            details: { postback: { data: action.data || "", params: { [mode]: values.value } } } });
}

async function sendLocation() {
  const values = await ask("Send a location", [
    { name: "title", label: "Title", value: "Tokyo Station" }, { name: "address", label: "Address", value: "1 Chome Marunouchi, Chiyoda City, Tokyo" },
    { name: "latitude", label: "Latitude", value: "35.681236" }, { name: "longitude", label: "Longitude", value: "139.767125" }]);
  if (!values) return;
  return send("location", { details: { message: { title: values.title, address: values.address,
                                                  latitude: Number(values.latitude), longitude: Number(values.longitude) } } });
}

async function switchMenu(action) {
  // LINE switches the menu on the phone, then sends the postback with the outcome
  let status = "SUCCESS";
  try {
    const found = await call(`/sandbox/chats/${state.speaker}/richmenu?alias=${encodeURIComponent(action.richMenuAliasId || "")}`);
    if (found.richMenuId) { state.menuAlias = action.richMenuAliasId; drawMenu(); } else status = "RICHMENU_ALIAS_ID_NOTFOUND";
  } catch (error) { status = "FAILED"; }
  return send("postback", { text: action.data || "", details: { postback: { data: action.data || "",
    params: { newRichMenuAliasId: action.richMenuAliasId, status } } } });
}

function upload(kind, accept) {
  const input = el("input", { type: "file", accept, hidden: true });
  input.addEventListener("change", () => {
    const file = input.files[0];
    input.remove();
    if (!file) return;
    if (file.size > MAX_UPLOAD_BYTES) { notice("Files up to 10 MB can be sent here."); return; }
    const reader = new FileReader();
    reader.onload = async () => {
      const data = String(reader.result).split(",", 2)[1] || "";
      const details = kind === "file" ? { message: { fileName: file.name } } :
        (kind === "audio" || kind === "video") ? { message: { duration: 8000 } } : undefined;
      const answer = await send(kind, { details, content: { data, type: file.type || "application/octet-stream" } });
      if (answer) state.uploads.set(answer.event.message.id, URL.createObjectURL(file));
      drawAll();
    };
    reader.readAsDataURL(file);
  });
  document.body.append(input);
  input.click();
}

// --- a small form in a <dialog> ------------------------------------------------------------------------
function ask(title, fields) {
  const dialog = $("dialog");
  dialog.replaceChildren();
  const form = el("form", { method: "dialog" }, el("h3", {}, title));
  const inputs = fields.map((f) => {
    const input = f.options
      ? el("select", { name: f.name }, f.options.map(([value, label]) => el("option", { value, selected: value === f.value }, label)))
      : el("input", { name: f.name, type: f.type || "text", value: f.value || "" });
    if (f.min) input.min = f.min;
    if (f.max) input.max = f.max;
    form.append(el("label", {}, f.label || f.name, input));
    return input;
  });
  form.append(el("div", { class: "row" }, el("button", { type: "submit", value: "ok", class: "primary" }, "OK"),
                 el("button", { type: "submit", value: "cancel" }, "Cancel")));
  dialog.append(form);
  return new Promise((resolve) => {
    dialog.onclose = () => resolve(dialog.returnValue === "ok"
      ? Object.fromEntries(inputs.map((input) => [input.name, input.value])) : null);
    dialog.returnValue = "";
    dialog.showModal();
    if (inputs[0]) inputs[0].focus();
  });
}

// --- the chat's items ----------------------------------------------------------------------------------
function byTime(a, b) { return a.time - b.time || a.seq - b.seq; }

function addItems(items) {
  for (const item of items) {
    if (state.items.some((known) => known.seq === item.seq)) continue;
    state.items.push(item);
  }
  state.items.sort(byTime);
}

function drawAll() {
  const box = $("messages");
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
  box.replaceChildren(...state.items.map(drawItem).filter(Boolean));
  drawLoading();
  drawQuickReplies();
  if (atBottom || drawAll.first !== false) box.scrollTop = box.scrollHeight;
  drawAll.first = false;
}

function drawItem(item) {
  if (item.kind === "user") return userRow(item);
  if (item.kind === "bot") return botRow(item);
  return null;
}

function avatar(person, fallback) {
  const node = el("span", { class: "avatar", title: person ? person.displayName : fallback },
                  person ? person.icon || person.displayName[0] : fallback[0]);
  node.style.backgroundColor = `hsl(${hue(person ? person.userId : fallback)}, 55%, 62%)`;
  return node;
}

function hue(text) {
  let h = 0;
  for (const c of String(text)) h = (h * 31 + c.codePointAt(0)) % 360;
  return h;
}

function clock(ms) {
  return new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

const SYSTEM_LINES = {
  follow: (e, n) => e.follow && e.follow.isUnblocked ? `${n} unblocked the bot` : `${n} added the bot as a friend`,
  unfollow: (e, n) => `${n} blocked the bot`,
  join: () => "The bot joined", leave: () => "The bot was removed",
  memberJoined: (e) => `${((e.joined || {}).members || []).map((m) => nameOf(m.userId)).join(", ")} joined`,
  memberLeft: (e) => `${((e.left || {}).members || []).map((m) => nameOf(m.userId)).join(", ")} left`,
  unsend: (e, n) => `${n} unsent a message`,
  beacon: (e, n) => `${n} passed beacon ${(e.beacon || {}).hwid} (${(e.beacon || {}).type})`,
  accountLink: (e, n) => `${n} linked an account: ${(e.link || {}).result}`,
  videoPlayComplete: (e, n) => `${n} watched video "${(e.videoPlayComplete || {}).trackingId}" to the end`,
  membership: (e, n) => `${n}: membership ${(e.membership || {}).type}`,
  messageEdited: (e, n) => `${n} edited a message: ${(e.message || {}).text || ""}`,
  postback: (e, n) => `${n} tapped: ${(e.postback || {}).data}` +
    ((e.postback || {}).params ? " " + JSON.stringify(e.postback.params) : ""),
};

function userRow(item) {
  const event = item.event || {};
  const uid = (event.source || {}).userId;
  const name = nameOf(uid);
  const inspect = () => inspectEvent(event.webhookEventId);
  let body;
  if (event.type === "message") body = userMessage(event.message || {});
  else if (event.type === "postback" && item.displayText) body = el("div", { class: "bubble text" }, item.displayText);
  if (!body) {
    const line = (SYSTEM_LINES[event.type] || ((e, n) => `${n}: ${e.type}`))(event, name);
    const row = el("div", { class: "system" + (item.status !== 200 ? " failed" : ""), data: { seq: item.seq } }, line, status(item));
    row.addEventListener("click", inspect);
    return row;
  }
  const row = el("div", { class: "row-user" + (item.status !== 200 ? " failed" : ""), data: { seq: item.seq, event: event.webhookEventId } });
  const column = el("div", { class: "column" });
  if (state.chat && state.chat.type !== "user") column.append(el("div", { class: "who" }, name));
  const line = el("div", { class: "line" }, el("span", { class: "meta" }, status(item), clock(item.time)), body);
  column.append(line);
  if (event.type === "message" && item.status === 200) {
    line.prepend(el("button", { class: "small unsend", type: "button", title: "unsend this message",
      onclick: (e) => { e.stopPropagation(); send("unsend", { user: uid, details: { unsend: { messageId: event.message.id } } }); } }, "unsend"));
    if (event.source.type === "group" && event.message.type === "text") {
      line.prepend(el("button", { class: "small edit", type: "button", title: "edit this message",
        onclick: (e) => { e.stopPropagation(); editMessage(uid, event.message); } }, "edit"));
    }
  }
  row.append(column, avatar(state.people.get(uid), name));
  row.addEventListener("click", inspect);
  return row;
}

function status(item) {
  if (item.status === 200) return el("span", { class: "ack", title: `the receiver answered 200 after ${item.ack_ms} ms (${item.by})` }, "✓");
  return el("span", { class: "not-delivered" }, `not delivered: ${item.status || "no answer"} `);
}

// A user's message: text (with its LINE emoji and mentions marked), sticker, media, location.
function userMessage(m) {
  if (m.type === "text") {
    const marks = [...(m.emojis || []).map((e) => ({ index: e.index, length: e.length, cls: "line-emoji-text" })),
                   ...((m.mention || {}).mentionees || []).map((e) => ({ index: e.index, length: e.length, cls: "mention" }))]
      .sort((a, b) => a.index - b.index);
    const bubble = el("div", { class: "bubble text" });
    const text = String(m.text || "");
    let at = 0;
    for (const mark of marks) {
      if (mark.index < at) continue;
      bubble.append(text.slice(at, mark.index), el("span", { class: mark.cls }, text.slice(mark.index, mark.index + mark.length)));
      at = mark.index + mark.length;
    }
    bubble.append(text.slice(at));
    return bubble;
  }
  if (m.type === "sticker") return renderMessage({ type: "sticker", packageId: m.packageId, stickerId: m.stickerId }, ctx);
  if (m.type === "location") return renderMessage(m, ctx);
  if (m.type === "image") {
    const url = state.uploads.get(m.id) || `/sandbox/uploads/${m.id}`;
    return renderMessage({ type: "image", originalContentUrl: url, previewImageUrl: url }, ctx);
  }
  return el("div", { class: "bubble" }, `${m.type}` + (m.fileName ? `: ${m.fileName}` : "") + (m.duration ? ` (${m.duration / 1000} s)` : ""));
}

function botRow(item) {
  const delivery = item.delivery || {};
  const row = el("div", { class: "bot-turn", data: { seq: item.seq } });
  for (const message of delivery.messages || []) {
    const sender = senderOf(message);
    const line = el("div", { class: "row-bot" });
    const face = el("span", { class: "avatar bot" }, sender && sender.name ? sender.name[0] : "bot");
    if (sender && /^https?:/.test(sender.iconUrl || "")) {
      const img = el("img", { alt: "" });
      img.addEventListener("error", () => img.remove());
      img.src = sender.iconUrl;
      face.append(img);
    }
    line.append(face, el("div", { class: "column" }, el("div", { class: "who" }, sender && sender.name ? sender.name : "bot"),
                         el("div", { class: "line" }, renderMessage(message, ctx),
                            el("span", { class: "meta" }, el("span", { class: "endpoint" }, delivery.endpoint), clock(item.time)))));
    row.append(line);
  }
  row.addEventListener("click", () => inspectBot(item));
  return row;
}

function drawLoading() {
  const last = state.items[state.items.length - 1];
  if (!last || last.kind !== "loading" || Date.now() > last.time + last.seconds * 1000) return;
  const dots = el("div", { class: "row-bot loading" }, el("span", { class: "avatar bot" }, "bot"),
                  el("div", { class: "bubble dots", title: `loading animation (${last.seconds} s)` }, el("i"), el("i"), el("i")));
  $("messages").append(dots);
  setTimeout(drawAll, last.time + last.seconds * 1000 - Date.now() + 50);
}

function drawQuickReplies() {
  // LINE shows a message's quick reply while that message is the newest in the chat
  const box = $("quick-replies");
  const last = [...state.items].reverse().find((item) => item.kind !== "loading");
  const messages = last && last.kind === "bot" ? last.delivery.messages || [] : [];
  box.replaceChildren(...quickReplyChips(messages[messages.length - 1], ctx));
}

const ctx = { act, nameOf, open: openLink, watched: (trackingId) => send("videoPlayComplete", { details: { videoPlayComplete: { trackingId } } }) };

// --- the inspector -------------------------------------------------------------------------------------
function openInspector(title, ...parts) {
  $("inspector").hidden = false;
  $("inspector-title").textContent = title;
  $("inspector-body").replaceChildren(...parts);
}

function code(value) { return el("pre", { class: "code" }, typeof value === "string" ? value : json(value)); }

function fold(summary, ...content) { return el("details", {}, el("summary", {}, summary), ...content); }

function ms(value) { return `${Math.round(value * 10) / 10} ms`; }

async function inspectEvent(eventId) {
  state.inspecting = { event: eventId };
  const trace = await call(`/sandbox/events/${eventId}/trace`);
  if (!trace.turn) { openInspector("Event", el("p", {}, "This event is no longer held.")); return; }
  const event = trace.turn.event, t0 = event.timestamp;
  const steps = [];   // [offset ms, list item]: shown in time order
  const step = (offset, text, cls, ...more) =>
    steps.push([offset, el("li", { class: cls || "" }, el("b", {}, offset === null ? "?" : "+" + ms(offset)), " " + text, ...more)]);
  step(0, `${event.type} sent by ${trace.turn.by}`);
  step(trace.turn.ack_ms, `webhook answered ${trace.turn.status || "nothing"}` +
       (trace.turn.ack_ms === null ? "" : ` after ${ms(trace.turn.ack_ms)}`), trace.turn.status === 200 ? "" : "bad");
  const traced = trace.calls.flatMap((c) => c.trace || []).find((t) => t.event === eventId);
  if (traced) {
    step(traced.received_at - t0, "stored by the receiver");
    step(traced.handed_at - t0, `handed to ${traced.handler} after ${ms(traced.handed_at - t0)}`);
  }
  for (const c of trace.calls) {
    step(c.time - t0, `${c.method} ${c.path} → ${c.status} in ${ms(c.ms)}`, c.status >= 400 ? "bad" : "",
         fold("request", code(c.request === null ? "(no body)" : c.request)), fold("response", code(c.response)));
  }
  for (const d of trace.deliveries) step(d.time - t0, `delivered (${d.delivery.endpoint}) after ${ms(d.time - t0)}`, "good");
  steps.sort((a, b) => (a[0] ?? Infinity) - (b[0] ?? Infinity));
  if (!trace.calls.length) steps.push([null, el("li", {}, "no API call for this event (yet)")]);
  openInspector(`${event.type} event`, el("h4", {}, "Path"), el("ol", { class: "timeline" }, steps.map((s) => s[1])),
                el("h4", {}, "Webhook event sent"), code(event));
}

async function inspectBot(item) {
  state.inspecting = null;
  const delivery = item.delivery;
  const parts = [el("h4", {}, `${delivery.endpoint} delivered to ${delivery.to.length ? delivery.to.join(", ") : "every follower"}`),
                 code(delivery.messages)];
  if (item.answers) {
    parts.push(el("p", {}, el("button", { type: "button", onclick: () => inspectEvent(item.answers) }, "the event it answers")));
  }
  try {
    const c = await call(`/sandbox/calls/${delivery.request_id}`);
    parts.push(el("h4", {}, `${c.method} ${c.path} → ${c.status} in ${ms(c.ms)}`), el("h4", {}, "Request"), code(c.request),
               el("h4", {}, "Response"), code(c.response));
  } catch (error) {
    parts.push(el("p", {}, error.message));
  }
  openInspector("Bot message", ...parts);
}

// --- rich menu -----------------------------------------------------------------------------------------
async function drawMenu() {
  const box = $("richmenu");
  if (!state.chat || state.chat.type !== "user") { box.replaceChildren(); return; }
  const query = state.menuAlias ? `?alias=${encodeURIComponent(state.menuAlias)}` : "";
  const found = await call(`/sandbox/chats/${chatId}/richmenu${query}`).catch(() => ({}));
  if (!found.richMenuId) { box.replaceChildren(); return; }
  const menu = found.menu;
  const area = el("div", { class: "menu-areas" });
  area.style.paddingBottom = (menu.size.height / menu.size.width * 100).toFixed(3) + "%";
  if (found.image) area.append(el("img", { src: found.image, alt: menu.name }));
  for (const a of menu.areas) {
    const b = a.bounds;
    const spot = el("button", { class: "menu-area", type: "button", title: actionLabel(a.action) }, actionLabel(a.action));
    Object.assign(spot.style, { left: `${b.x / menu.size.width * 100}%`, top: `${b.y / menu.size.height * 100}%`,
                                width: `${b.width / menu.size.width * 100}%`, height: `${b.height / menu.size.height * 100}%` });
    spot.addEventListener("click", () => act(a.action));
    area.append(spot);
  }
  const bar = el("button", { class: "chat-bar", type: "button", onclick: () => { state.menuOpen = !state.menuOpen; drawMenu(); } },
                 `${menu.chatBarText} ${state.menuOpen ? "▾" : "▴"}`);
  box.replaceChildren(...(state.menuOpen ? [el("div", { class: "menu-frame" }, area), bar] : [bar]));
  box.dataset.menu = found.richMenuId;
}

// --- composer ------------------------------------------------------------------------------------------
function drawSpeakers() {
  const box = $("speakers");
  const members = state.chat ? state.chat.members : [];
  box.replaceChildren(el("span", { class: "label" }, "speaking:"), ...members.map((p) => {
    const chip = el("button", { class: "speaker" + (p.userId === state.speaker ? " chosen" : ""), type: "button", data: { user: p.userId },
                                onclick: () => { state.speaker = p.userId; drawSpeakers(); } }, avatar(p), p.displayName);
    return chip;
  }));
  $("mention").hidden = !state.chat || state.chat.type === "user";
}

function marks(text) {
  // LINE emoji and mentions in what is typed: index and length in UTF-16 units, as LINE counts
  const emojis = [], mentionees = [];
  for (const [token, id] of LINE_EMOJI) {
    for (let i = text.indexOf(token); i >= 0; i = text.indexOf(token, i + token.length)) {
      emojis.push({ index: i, length: token.length, productId: LINE_EMOJI_PRODUCT, emojiId: id });
    }
  }
  if (state.chat && state.chat.type !== "user") {
    for (const p of [...state.chat.members, { userId: null, displayName: "All" }]) {
      const token = "@" + p.displayName;
      for (let i = text.indexOf(token); i >= 0; i = text.indexOf(token, i + token.length)) {
        mentionees.push(p.userId ? { index: i, length: token.length, type: "user", userId: p.userId }
                                 : { index: i, length: token.length, type: "all" });
      }
    }
  }
  const message = {};
  if (emojis.length) message.emojis = emojis.sort((a, b) => a.index - b.index);
  if (mentionees.length) message.mention = { mentionees: mentionees.sort((a, b) => a.index - b.index) };
  return Object.keys(message).length ? { message } : undefined;
}

async function editMessage(uid, message) {
  const values = await ask("Edit the message", [{ name: "text", label: "Text", value: message.text }]);
  if (values) send("messageEdited", { user: uid, text: values.text, details: { message: { id: message.id } } });
}

function picker(title, choices) {
  const dialog = $("dialog");
  dialog.replaceChildren(el("form", { method: "dialog" }, el("h3", {}, title),
    el("div", { class: "grid" }, choices.map(([label, run]) => el("button", { type: "submit", value: "pick", onclick: run }, label))),
    el("div", { class: "row" }, el("button", { type: "submit", value: "cancel" }, "Cancel"))));
  dialog.onclose = null;
  dialog.showModal();
}

function moreMenu() {
  const group = state.chat && state.chat.type !== "user";
  const choices = [
    ["Sticker", () => setTimeout(() => picker("Stickers", STICKERS.map(([p, s]) =>
      [`${p} / ${s}`, () => send("sticker", { details: { message: { packageId: p, stickerId: s } } })])))],
    ["Photo", () => upload("image", "image/*")], ["Video", () => upload("video", "video/*")],
    ["Voice", () => upload("audio", "audio/*")], ["File", () => upload("file", "")],
    ["Location", () => setTimeout(sendLocation)],
  ];
  if (group) {
    choices.push(["Invite the bot (join)", () => send("join")], ["Remove the bot (leave)", () => send("leave")],
                 ["Add a member", () => setTimeout(addMember)],
                 ["Leave the group", () => send("memberLeft", { details: { left: { members: [{ type: "user", userId: state.speaker }] } } })]);
  } else {
    choices.push(["Add as friend (follow)", () => send("follow")], ["Block (unfollow)", () => send("unfollow")],
                 ["Unblock", () => send("follow", { details: { follow: { isUnblocked: true } } })],
                 ["Beacon", () => setTimeout(beacon)], ["Account link", () => setTimeout(accountLink)]);
  }
  picker("Send", choices);
}

async function addMember() {
  const inside = new Set(state.chat.members.map((m) => m.userId));
  const options = [...state.people.values()].filter((p) => !inside.has(p.userId)).map((p) => [p.userId, p.displayName]);
  if (!options.length) { notice("Everyone is in this chat: make a new person first."); return; }
  const values = await ask("Add a member", [{ name: "user", label: "Who", options, value: options[0][0] }]);
  if (!values) return;
  await send("memberJoined", { user: values.user, details: { joined: { members: [{ type: "user", userId: values.user }] } } });
  await loadChat();
}

async function beacon() {
  const values = await ask("Beacon", [{ name: "hwid", label: "Hardware id", value: "d41d8cd98f" },
                                      { name: "type", label: "Type", options: [["enter", "enter"], ["banner", "banner"], ["stay", "stay"]], value: "enter" }]);
  if (values) send("beacon", { details: { beacon: { hwid: values.hwid, type: values.type } } });
}

async function accountLink() {
  const values = await ask("Account link", [{ name: "result", label: "Result", options: [["ok", "ok"], ["failed", "failed"]], value: "ok" },
                                            { name: "nonce", label: "Nonce", value: "" }]);
  if (values) send("accountLink", { details: { link: { result: values.result, nonce: values.nonce || "nonce" } } });
}

function wireComposer() {
  $("composer").addEventListener("submit", async (e) => {
    e.preventDefault();
    const input = $("text");
    const text = input.value;
    if (!text.trim()) return;
    input.value = "";
    await send("text", { text, details: marks(text) });
  });
  $("more").addEventListener("click", moreMenu);
  $("emoji").addEventListener("click", () => picker("LINE emoji", LINE_EMOJI.map(([token, , glyph]) =>
    [`${glyph} ${token}`, () => { $("text").value += token; setTimeout(() => $("text").focus()); }])));
  $("mention").addEventListener("click", () => picker("Mention", [...state.chat.members.map((p) => p.displayName), "All"].map((name) =>
    [`@${name}`, () => { $("text").value += `@${name} `; setTimeout(() => $("text").focus()); }])));
  $("inspector-close").addEventListener("click", () => { $("inspector").hidden = true; state.inspecting = null; });
}

// --- sidebar: people, groups, other chats --------------------------------------------------------------
async function loadSidebar() {
  const all = await call("/sandbox/chats");
  state.people = new Map(all.people.map((p) => [p.userId, p]));
  const link = (href, label, current, extra) => el("li", { class: current ? "current" : "" }, el("a", { href }, extra || "", label));
  $("people").replaceChildren(...all.people.map((p) => link(`/chat?user=${p.userId}`, p.displayName, p.userId === chatId, avatar(p))));
  $("groups").replaceChildren(...all.groups.map((g) => link(`/chat?${g.type}=${g.chatId}`, `${g.name} (${g.members.length})`, g.chatId === chatId)));
  const played = new Set([...all.people.map((p) => p.userId), ...all.groups.map((g) => g.chatId)]);
  $("others").replaceChildren(...all.chats.filter((c) => !played.has(c.chatId)).slice(0, 50)
    .map((c) => link(`/chat?${c.type}=${c.chatId}`, c.name, c.chatId === chatId)));
}

async function newPerson() {
  const values = await ask("A new person", [{ name: "displayName", label: "Name", value: "" }, { name: "icon", label: "Icon (an emoji or a letter)", value: "" }]);
  if (!values || !values.displayName.trim()) return;
  try {
    const person = await post("/sandbox/people", { displayName: values.displayName, icon: values.icon || undefined });
    location.href = `/chat?user=${person.userId}`;
  } catch (error) { notice(error.message); }
}

async function newChat(type) {
  const people = [...state.people.values()];
  if (!people.length) { notice("Make some people first."); return; }
  const values = await ask(`A new ${type}`, [{ name: "name", label: "Name", value: "" },
    ...people.map((p) => ({ name: p.userId, label: `${p.displayName} is in it (yes/no)`, value: "yes" }))]);
  if (!values) return;
  const members = people.filter((p) => /^y/i.test(values[p.userId] || "")).map((p) => p.userId);
  try {
    const chat = await post("/sandbox/groups", { type, name: values.name || undefined, members });
    location.href = `/chat?${type}=${chat.chatId}`;
  } catch (error) { notice(error.message); }
}

// --- start ---------------------------------------------------------------------------------------------
async function loadChat() {
  state.chat = await call(`/sandbox/chats/${chatId}`);
  for (const p of state.chat.members) if (!state.people.has(p.userId)) state.people.set(p.userId, p);
  if (!state.speaker || !state.chat.members.some((m) => m.userId === state.speaker)) {
    state.speaker = state.chat.members.length ? state.chat.members[0].userId : null;
  }
  $("chat-title").replaceChildren(el("strong", {}, state.chat.name),
    el("span", { class: "chat-kind" }, state.chat.type === "user" ? " one-to-one chat" : ` ${state.chat.type}, ${state.chat.members.length} members`));
  $("chat-tools").replaceChildren(el("a", { href: `/sandbox/chats/${chatId}/transcript`, download: `chat-${chatId}.json`, id: "export", class: "button" }, "Export transcript"));
  drawSpeakers();
}

function whileShown() {
  // An AbortSignal that fires when the page is hidden (another chat opened, the tab left for the
  // back/forward cache): a long poll left open there would hold one of the browser's few
  // connections to the sandbox, and the chats opened next would wait for it to end.
  const hidden = new AbortController();
  window.addEventListener("pagehide", () => hidden.abort(), { once: true });
  return hidden.signal;
}

async function follow() {
  // the history, long-polled: each answer brings the items after the newest seq seen
  for (let first = true; ; first = false) {
    const signal = whileShown();
    try {
      const page = await call(`/sandbox/chats/${chatId}/history?since=${state.seq}&wait=${first ? 0 : 25}`, { signal });
      if (page.items.length) {
        addItems(page.items);
        drawAll();
        if (page.items.some((item) => item.kind === "bot")) drawMenu();
        if (state.inspecting) inspectEvent(state.inspecting.event);
      }
      state.seq = Math.max(state.seq, page.seq);
      document.body.dataset.seq = String(state.seq);
    } catch (error) {
      if (signal.aborted) {   // hidden: follow again if the page is shown again from the cache
        await new Promise((resolve) => window.addEventListener("pageshow", resolve, { once: true }));
        continue;
      }
      notice(`Lost the sandbox (${error.message}); trying again…`);
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  }
}

async function start() {
  wireComposer();
  $("new-person").addEventListener("click", newPerson);
  $("new-group").addEventListener("click", () => newChat("group"));
  $("new-room").addEventListener("click", () => newChat("room"));
  await loadSidebar().catch((error) => notice(error.message));
  if (!chatId) {
    $("composer").hidden = true;
    $("messages").replaceChildren(el("div", { class: "welcome" }, el("h2", {}, "Chat with your bot"),
      el("p", {}, "Make a person (left), then talk to the bot as them; make a group to play several people at once.")));
    document.body.dataset.ready = "true";
    return;
  }
  try {
    await loadChat();
  } catch (error) {
    notice(error.message);
    return;
  }
  drawMenu();
  document.body.dataset.ready = "true";
  follow();
}

start();

// LINE message objects drawn as the LINE app shows them. `act(action)` is called when the user
// taps something with an action; `ctx.nameOf(userId)` names mentioned users.
import { el, actionLabel } from "./chat-dom.js";
import { flexContainer, picture } from "./chat-flex.js";

const TEMPLATE_RATIO = { rectangle: 1 / 1.51, square: 1 };

export function renderMessage(message, ctx) {
  const draw = { text: textMessage, textV2: textV2Message, sticker, image, video, audio, location,
                 imagemap, template, flex, coupon }[message && message.type];
  const node = draw ? draw(message, ctx) : el("div", { class: "bubble" }, `(${message && message.type} message)`);
  node.classList.add("message", "message-" + (message && message.type));
  return node;
}

function textMessage(m, ctx) {
  // LINE emoji replace each "$" named by `emojis` (index in UTF-16 units, as JavaScript counts).
  const bubble = el("div", { class: "bubble text" });
  const text = String(m.text || "");
  const at = new Map((m.emojis || []).map((e) => [e.index, e]));
  let plain = "";
  for (let i = 0; i < text.length; i++) {
    const emoji = at.get(i);
    if (emoji && text[i] === "$") {
      if (plain) { bubble.append(plain); plain = ""; }
      bubble.append(lineEmoji(emoji));
    } else {
      plain += text[i];
    }
  }
  if (plain) bubble.append(plain);
  return bubble;
}

function lineEmoji(e) {
  return el("span", { class: "line-emoji", title: `LINE emoji ${e.productId} / ${e.emojiId}` }, "☺");
}

function textV2Message(m, ctx) {
  // {name} placeholders filled from `substitution`: mentions and LINE emoji.
  const bubble = el("div", { class: "bubble text" });
  const parts = String(m.text || "").split(/(\{[A-Za-z0-9_]+\})/);
  for (const part of parts) {
    const key = /^\{([A-Za-z0-9_]+)\}$/.exec(part);
    const sub = key && (m.substitution || {})[key[1]];
    if (!sub) { if (part) bubble.append(part); continue; }
    if (sub.type === "mention") {
      const who = sub.mentionee || {};
      bubble.append(el("span", { class: "mention" }, "@" + (who.type === "all" ? "All" : ctx.nameOf(who.userId))));
    } else if (sub.type === "emoji") {
      bubble.append(lineEmoji(sub));
    } else {
      bubble.append(part);
    }
  }
  return bubble;
}

function sticker(m) {
  return el("div", { class: "sticker", title: "sticker" },
            el("span", { class: "sticker-face" }, "🙂"), el("span", {}, `sticker ${m.packageId} / ${m.stickerId}`));
}

function image(m, ctx) {
  const node = el("div", { class: "media" });
  node.append(picture(m.previewImageUrl || m.originalContentUrl, 3 / 4, "cover"));
  node.addEventListener("click", () => ctx.open(m.originalContentUrl));
  return node;
}

function video(m, ctx) {
  const node = el("div", { class: "media video" });
  node.append(picture(m.previewImageUrl, 9 / 16, "cover", null, "video"), el("span", { class: "play" }, "▶"));
  if (m.trackingId) {
    // LINE sends videoPlayComplete when a video with a trackingId was watched to the end
    node.append(el("button", { class: "small watched", type: "button",
                               onclick: (e) => { e.stopPropagation(); ctx.watched(m.trackingId); } },
                   "watched to the end"));
  }
  return node;
}

function audio(m) {
  const seconds = Math.round((Number(m.duration) || 0) / 1000);
  return el("div", { class: "bubble audio" }, "▶ ", el("span", { class: "bar" }), ` ${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, "0")}`);
}

function location(m) {
  return el("div", { class: "location" },
            el("div", { class: "map" }, "📍"),
            el("div", { class: "where" }, el("strong", {}, m.title || "Location"), el("div", {}, m.address || ""),
               el("div", { class: "coords" }, `${m.latitude}, ${m.longitude}`)));
}

function coupon(m) {
  return el("div", { class: "bubble" }, `coupon ${m.couponId || ""}`);
}

function imagemap(m, ctx) {
  // The image at baseUrl/1040; its areas are tappable, in proportion to baseSize.
  const size = m.baseSize || {};
  const width = Number(size.width) || 1040, height = Number(size.height) || 1040;
  const node = el("div", { class: "imagemap" });
  node.append(picture(`${m.baseUrl}/1040`, height / width, "cover", null, "imagemap"));
  for (const action of m.actions || []) {
    const area = action.area || {};
    const spot = el("button", { class: "area", type: "button", title: actionLabel(action) }, action.label || "");
    Object.assign(spot.style, { left: pct(area.x, width), top: pct(area.y, height),
                                width: pct(area.width, width), height: pct(area.height, height) });
    spot.addEventListener("click", () => ctx.act(action.type === "uri" ? { type: "uri", uri: action.linkUri } : action));
    node.append(spot);
  }
  return node;
}

function pct(part, whole) { return ((Number(part) || 0) / whole * 100).toFixed(3) + "%"; }

function template(m, ctx) {
  const t = m.template || {};
  if (t.type === "confirm") {
    return el("div", { class: "template confirm" }, el("div", { class: "template-text" }, t.text || ""),
              el("div", { class: "template-actions row" }, (t.actions || []).map((a) => actionButton(a, ctx))));
  }
  if (t.type === "carousel") {
    return el("div", { class: "template-carousel" }, (t.columns || []).map((c) => card(c, t, ctx)));
  }
  if (t.type === "image_carousel") {
    return el("div", { class: "template-carousel" }, (t.columns || []).map((c) => {
      const node = el("div", { class: "image-column tappable", title: actionLabel(c.action) },
                      picture(c.imageUrl, 1, "cover"), el("span", { class: "image-label" }, (c.action || {}).label || ""));
      node.addEventListener("click", () => c.action && ctx.act(c.action));
      return node;
    }));
  }
  return card(t, t, ctx);   // buttons
}

// A buttons template, or one column of a carousel template.
function card(c, t, ctx) {
  const node = el("div", { class: "template card" });
  if (c.thumbnailImageUrl) {
    const pic = picture(c.thumbnailImageUrl, TEMPLATE_RATIO[t.imageAspectRatio] || TEMPLATE_RATIO.rectangle,
                        t.imageSize === "contain" ? "fit" : "cover", c.imageBackgroundColor);
    if (c.defaultAction) { pic.classList.add("tappable"); pic.addEventListener("click", () => ctx.act(c.defaultAction)); }
    node.append(pic);
  }
  if (c.title) node.append(el("div", { class: "template-title" }, c.title));
  node.append(el("div", { class: "template-text" }, c.text || ""));
  node.append(el("div", { class: "template-actions" }, (c.actions || []).map((a) => actionButton(a, ctx))));
  return node;
}

function actionButton(action, ctx) {
  return el("button", { class: "template-button", type: "button", onclick: () => ctx.act(action) }, actionLabel(action));
}

function flex(m, ctx) {
  return el("div", { class: "flex-message", title: m.altText || "" }, flexContainer(m.contents, ctx.act));
}

// The sender override of a bot message: {name, iconUrl}.
export function senderOf(message) {
  const sender = message && message.sender;
  return sender && typeof sender === "object" ? { name: sender.name, iconUrl: sender.iconUrl } : null;
}

export function quickReplyChips(message, ctx) {
  const items = ((message || {}).quickReply || {}).items || [];
  return items.map((item) => {
    const action = item.action || {};
    const chip = el("button", { class: "chip", type: "button", title: action.type }, actionLabel(action));
    if (item.imageUrl) {
      const img = el("img", { alt: "" });
      img.addEventListener("error", () => img.remove());
      img.src = item.imageUrl;
      chip.prepend(img);
    }
    chip.addEventListener("click", () => ctx.act(action, { quickReply: true }));
    return chip;
  });
}


// Flex Messages drawn as the LINE app lays them out: boxes are CSS flex boxes (LINE's layout is
// CSS Flexbox), keyword sizes are the pixel values of LINE's Flex layout tables. Every text goes
// into the page as text (textContent), never as markup.
import { el, safeColor, actionLabel } from "./chat-dom.js";

const TEXT_PX = { xxs: 11, xs: 13, sm: 14, md: 16, lg: 19, xl: 22, xxl: 29, "3xl": 35, "4xl": 48, "5xl": 74 };
const SPACE_PX = { none: 0, xs: 2, sm: 4, md: 8, lg: 12, xl: 16, xxl: 20 };
const IMAGE_PX = { xxs: 40, xs: 60, sm: 80, md: 100, lg: 120, xl: 140, xxl: 160, "3xl": 180, "4xl": 200, "5xl": 220 };
const BUBBLE_PX = { nano: 120, micro: 160, deca: 220, hecto: 241, kilo: 260, mega: 300, giga: 500 };
const BORDER_PX = { none: 0, light: 0.5, normal: 1, medium: 2, "semi-bold": 3, bold: 4 };
const BLOCK_PADDING = { header: "20px", hero: "0px", body: "20px", footer: "10px" };
const JUSTIFY = { "flex-start": "flex-start", "flex-end": "flex-end", center: "center",
                  "space-between": "space-between", "space-around": "space-around", "space-evenly": "space-evenly" };
const ALIGN = { start: "flex-start", end: "flex-end", center: "center" };
const GRAVITY = { top: "flex-start", bottom: "flex-end", center: "center" };
const PADDING_SIDES = [["Top", "paddingTop"], ["Bottom", "paddingBottom"], ["Start", "paddingInlineStart"], ["End", "paddingInlineEnd"]];

// A length: a keyword of `table`, or "12px" / "50%" as given; anything else gives `fallback`.
function length(value, table, fallback) {
  if (value === undefined || value === null) return fallback;
  if (table && Object.prototype.hasOwnProperty.call(table, value)) return table[value] + "px";
  if (typeof value === "string" && /^-?\d+(\.\d+)?(px|%)$/.test(value)) return value;
  return fallback;
}

function ratio(text, fallback) {
  const m = /^(\d+(?:\.\d+)?):(\d+(?:\.\d+)?)$/.exec(text || "");
  return m ? Number(m[2]) / Number(m[1]) : fallback;
}

// The container of a Flex Message: a bubble or a carousel.
export function flexContainer(container, act) {
  if (container && container.type === "carousel") {
    const row = el("div", { class: "flex-carousel" });
    for (const bubble of container.contents || []) row.append(flexBubble(bubble, act));
    return row;
  }
  return flexBubble(container, act);
}

function flexBubble(bubble, act) {
  const node = el("div", { class: "flex-bubble" });
  node.style.width = (BUBBLE_PX[bubble.size] || BUBBLE_PX.mega) + "px";
  if (bubble.direction === "rtl") node.dir = "rtl";
  const styles = bubble.styles || {};
  let first = true;
  for (const block of ["header", "hero", "body", "footer"]) {
    const part = bubble[block];
    if (!part) continue;
    const style = styles[block] || {};
    const holder = el("div", { class: "flex-block flex-" + block });
    if (style.backgroundColor) holder.style.background = safeColor(style.backgroundColor);
    if (style.separator && !first) holder.style.borderTop = "1px solid " + (safeColor(style.separatorColor) || "#e5e5e5");
    const inner = component(part, { layout: "vertical", act, block });
    if (part.type === "box" && part.paddingAll === undefined) {
      // a block's box has LINE's padding for the block on each side it sets none of its own
      for (const [side, css] of PADDING_SIDES) if (part["padding" + side] === undefined) inner.style[css] = BLOCK_PADDING[block];
    }
    if (block === "body" || part.flex !== undefined) holder.style.flex = block === "body" ? "1 1 auto" : "0 0 auto";
    holder.append(inner);
    node.append(holder);
    first = false;
  }
  clickable(node, bubble.action, act);
  return node;
}

function clickable(node, action, act) {
  if (!action) return;
  node.classList.add("tappable");
  node.title = actionLabel(action);
  node.addEventListener("click", (e) => { e.stopPropagation(); act(action); });
}

// One component inside a box of `parent.layout`.
function component(c, parent) {
  const make = { box, text, image, icon, button, separator, filler, spacer, video }[c && c.type];
  const node = make ? make(c, parent) : el("div", { class: "flex-unknown" }, `(${c && c.type} component)`);
  placeAsChild(node, c, parent);
  return node;
}

function placeAsChild(node, c, parent) {
  const horizontal = parent.layout !== "vertical";
  // LINE: in a horizontal or baseline box a component takes flex 1 by default, in a vertical box 0.
  const grow = c.flex !== undefined ? Number(c.flex) : (horizontal && c.type !== "separator" && c.type !== "icon" ? 1 : 0);
  if (c.type === "filler") node.style.flex = `${c.flex !== undefined ? Number(c.flex) : 1} 0 0`;
  else if (c.type !== "spacer") node.style.flex = grow > 0 ? `${grow} 0 0` : "0 0 auto";
  if (horizontal && grow > 0) node.style.minWidth = "0";
  if (c.gravity && parent.layout !== "baseline") node.style.alignSelf = GRAVITY[c.gravity] || "";
  if (c.position === "absolute") node.style.position = "absolute";
  for (const side of ["Top", "Bottom", "Start", "End"]) {
    const v = length(c["offset" + side], SPACE_PX, null);
    if (v !== null) node.style[{ Top: "top", Bottom: "bottom", Start: "insetInlineStart", End: "insetInlineEnd" }[side]] = v;
  }
  if (c.position !== "absolute" && ["Top", "Bottom", "Start", "End"].some((s) => c["offset" + s] !== undefined)) node.style.position = "relative";
}

function box(c, parent) {
  const layout = c.layout === "horizontal" || c.layout === "baseline" ? c.layout : "vertical";
  const node = el("div", { class: "flex-box flex-" + layout });
  const s = node.style;
  if (c.backgroundColor) s.backgroundColor = safeColor(c.backgroundColor);
  if (c.background && c.background.type === "linearGradient") {
    const g = c.background;
    const stops = [safeColor(g.startColor) || "#fff"];
    if (g.centerColor) stops.push(`${safeColor(g.centerColor)} ${length(g.centerPosition, null, "50%")}`);
    stops.push(safeColor(g.endColor) || "#fff");
    s.backgroundImage = `linear-gradient(${/^\d+(\.\d+)?deg$/.test(g.angle || "") ? g.angle : "0deg"}, ${stops.join(", ")})`;
  }
  if (c.borderColor) s.borderColor = safeColor(c.borderColor);
  const border = length(c.borderWidth, BORDER_PX, null);
  if (border !== null) { s.borderStyle = "solid"; s.borderWidth = border; }
  const radius = length(c.cornerRadius, SPACE_PX, null);
  if (radius !== null) s.borderRadius = radius;
  for (const [prop, css] of [["width", "width"], ["maxWidth", "maxWidth"], ["height", "height"], ["maxHeight", "maxHeight"]]) {
    const v = length(c[prop], null, null);
    if (v !== null) s[css] = v;
  }
  const all = length(c.paddingAll, SPACE_PX, null);
  if (all !== null) s.padding = all;
  for (const [side, css] of PADDING_SIDES) {
    const v = length(c["padding" + side], SPACE_PX, null);
    if (v !== null) s[css] = v;
  }
  if (c.justifyContent) s.justifyContent = JUSTIFY[c.justifyContent] || "";
  if (c.alignItems) s.alignItems = JUSTIFY[c.alignItems] || "";
  const spacing = length(c.spacing, SPACE_PX, "0px");
  const children = (c.contents || []).map((child) => component(child, { layout, act: parent.act }));
  children.forEach((node2, i) => {
    const margin = length((c.contents[i] || {}).margin, SPACE_PX, i > 0 ? spacing : null);
    if (margin !== null && i > 0 && c.contents[i].position !== "absolute") {
      node2.style[layout === "vertical" ? "marginTop" : "marginInlineStart"] = margin;
    }
    node.append(node2);
  });
  clickable(node, c.action, parent.act);
  return node;
}

function textStyle(node, c) {
  const size = length(c.size, TEXT_PX, null);
  if (size !== null) node.style.fontSize = size;
  if (c.weight === "bold") node.style.fontWeight = "bold";
  if (c.style === "italic") node.style.fontStyle = "italic";
  if (c.decoration === "underline" || c.decoration === "line-through") node.style.textDecoration = c.decoration;
  if (c.color) node.style.color = safeColor(c.color);
}

function text(c, parent) {
  const node = el("div", { class: "flex-text" });
  node.style.fontSize = TEXT_PX.md + "px";
  textStyle(node, c);
  if (c.align) node.style.textAlign = { start: "start", end: "end", center: "center" }[c.align] || "";
  if (c.wrap) {
    node.classList.add("wrap");
    if (c.lineSpacing) node.style.lineHeight = `calc(1.4em + ${length(c.lineSpacing, null, "0px")})`;
    if (c.maxLines > 0) { node.classList.add("clamped"); node.style.webkitLineClamp = String(c.maxLines); }
  }
  if (Array.isArray(c.contents) && c.contents.length) {
    for (const span of c.contents) {
      const part = el("span", {}, span.text || "");
      textStyle(part, span);
      node.append(part);
    }
  } else {
    node.textContent = c.text || "";
  }
  clickable(node, c.action, parent.act);
  return node;
}

export function picture(url, aspect, mode, background, label) {
  // An image at `url` in a frame of the given height/width ratio; a picture that cannot be fetched
  // (no network here, or a bad URL) leaves a placeholder naming its file.
  const frame = el("div", { class: "picture" });
  frame.style.paddingBottom = (aspect * 100).toFixed(3) + "%";
  if (background) frame.style.backgroundColor = safeColor(background);
  const name = String(url || "").split("/").pop() || "image";
  frame.append(el("span", { class: "picture-name" }, label || name));
  if (/^(https?:|blob:|data:image\/|\/)/.test(url || "")) {
    const img = el("img", { alt: label || name, loading: "lazy", referrerPolicy: "no-referrer" });
    img.style.objectFit = mode === "fit" ? "contain" : "cover";
    img.addEventListener("error", () => img.remove());
    img.src = url;
    frame.append(img);
  }
  return frame;
}

function image(c, parent) {
  const holder = el("div", { class: "flex-image" });
  const width = c.size === "full" ? "100%" : length(c.size, IMAGE_PX, IMAGE_PX.md + "px");
  holder.style.width = width;
  holder.style.maxWidth = "100%";
  if (parent.layout === "vertical") holder.style.alignSelf = ALIGN[c.align] || "center";
  else holder.style.justifyContent = ALIGN[c.align] || "center";
  holder.append(picture(c.url, ratio(c.aspectRatio, 1), c.aspectMode, c.backgroundColor));
  clickable(holder, c.action, parent.act);
  return holder;
}

function video(c, parent) {
  const holder = el("div", { class: "flex-image flex-video" });
  holder.style.width = "100%";
  holder.append(picture(c.previewUrl, ratio(c.aspectRatio, 9 / 16), "cover", null, "video"));
  holder.append(el("span", { class: "play" }, "▶"));
  clickable(holder, c.action, parent.act);
  return holder;
}

function icon(c) {
  const px = TEXT_PX[c.size] || (/^\d+px$/.test(c.size || "") ? parseInt(c.size, 10) : TEXT_PX.md);
  const node = el("span", { class: "flex-icon" });
  node.style.height = px + "px";
  node.style.width = px / ratio(c.aspectRatio, 1) + "px";
  const img = el("img", { alt: "" });
  img.addEventListener("error", () => { img.remove(); node.classList.add("missing"); });
  if (/^https?:/.test(c.url || "")) img.src = c.url; else node.classList.add("missing");
  node.append(img);
  return node;
}

function button(c, parent) {
  const style = c.style === "primary" || c.style === "secondary" ? c.style : "link";
  const node = el("button", { class: `flex-button ${style} ${c.height === "sm" ? "sm" : "md"}`, type: "button" },
                  actionLabel(c.action));
  if (c.color) {
    if (style === "link") node.style.color = safeColor(c.color);
    else node.style.backgroundColor = safeColor(c.color);
  }
  node.addEventListener("click", (e) => { e.stopPropagation(); if (c.action) parent.act(c.action); });
  return node;
}

function separator(c, parent) {
  const node = el("div", { class: "flex-separator " + (parent.layout === "vertical" ? "across" : "upright") });
  if (c.color) node.style.backgroundColor = safeColor(c.color);
  return node;
}

function filler() { return el("div", { class: "flex-filler" }); }

function spacer(c, parent) {
  const node = el("div", { class: "flex-spacer" });
  node.style[parent.layout === "vertical" ? "height" : "width"] = length(c.size, SPACE_PX, SPACE_PX.md + "px");
  node.style.flex = "0 0 auto";
  return node;
}

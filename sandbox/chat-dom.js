// Building the page's DOM: every text is a text node (no innerHTML), every colour is checked.

// el("div", {class: "x", title: "..."}, "text", child, ...): an element with properties and children;
// strings become text nodes, so a message saying "<img src=x onerror=...>" shows exactly that.
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null) continue;
    if (key === "class") node.className = value;
    else if (key === "data") for (const [k, v] of Object.entries(value)) node.dataset[k] = v;
    else node[key] = value;
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(typeof child === "string" || typeof child === "number" ? document.createTextNode(String(child)) : child);
  }
  return node;
}

// A colour LINE accepts (#RRGGBB or #RRGGBBAA), else null: nothing else reaches a style.
export function safeColor(value) {
  return typeof value === "string" && /^#([0-9a-fA-F]{6}|[0-9a-fA-F]{8})$/.test(value) ? value : null;
}

export function actionLabel(action) {
  if (!action) return "";
  return action.label || action.text || action.displayText || action.data || action.uri || action.linkUri || action.type || "";
}

export function json(value) {
  return JSON.stringify(value, null, 2);
}

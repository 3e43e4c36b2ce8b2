// meshaudit auditor's page: search, read and prove events. Every value from
// an event is put on the page with textContent (never as HTML), and the
// admin token lives only in this closure.
"use strict";
(function () {
  const V = window.MeshauditVerify;
  const $ = (id) => document.getElementById(id);
  let token = null;
  let query = null;          // URLSearchParams of the current search, without `after`
  let cursors = [];          // `after` of each page shown so far (first page: null)
  let nextCursor = null;

  // ---- helpers -------------------------------------------------------------
  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }
  function setText(id, text, cls) { const n = $(id); n.textContent = text; n.className = cls || ""; }
  function short(h) { return h && h.length > 16 ? h.slice(0, 16) + "…" : h; }
  function get(obj, path) {
    return path.split(".").reduce((o, k) => (o && typeof o === "object" ? o[k] : undefined), obj);
  }

  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }
  async function call(path, asText) {
    const r = await fetch(path, { headers: { Authorization: "Bearer " + token }, cache: "no-store" });
    if (r.status === 401) { signOut("The token was refused."); throw new ApiError(401, "signed out"); }
    if (!r.ok) {
      let msg = r.status + " " + r.statusText;
      try { const b = await r.json(); if (b.message) msg = b.message; } catch (e) { /* not JSON */ }
      throw new ApiError(r.status, msg);
    }
    return asText ? r.text() : r.json();
  }

  // ---- sign in ---------------------------------------------------------------
  function signOut(message) {
    token = null;
    $("app").hidden = true;
    $("login").hidden = false;
    setText("login-error", message || "");
  }
  $("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    token = $("token").value;
    $("token").value = "";
    try {
      const overview = await call("/v1/overview");
      $("login").hidden = true;
      $("app").hidden = false;
      setText("login-error", "");
      showOverview(overview);
      loadLog(overview);
      runSearch();
    } catch (e) {
      if (e.status !== 401) setText("login-error", e.message);
    }
  });

  // ---- integrity at a glance -----------------------------------------------
  function showOverview(o) {
    setText("head", "seq " + o.head.seq + " · " + o.head.chain_hash);
    setText("unverified", String(o.unverified), o.unverified > 0 ? "warn" : "ok");
    const drops = $("drops");
    clear(drops);
    if (o.sources_with_drops.length === 0) {
      drops.appendChild(el("span", "none (" + o.sources_seen + " sources seen)", "ok"));
    } else {
      for (const s of o.sources_with_drops) {
        drops.appendChild(el("div", s.source + ": " + s.dropped + " dropped", "warn"));
      }
    }
    const bars = $("chart-rejections");
    clear(bars);
    const max = Math.max(1, ...Object.values(o.rejections));
    for (const [reason, n] of Object.entries(o.rejections)) {
      const row = el("div", null, "bar");
      row.appendChild(el("span", reason, "label"));
      const fill = el("span", null, "fill");
      fill.style.width = (n / max) * 20 + "rem";
      row.appendChild(fill);
      row.appendChild(el("span", String(n)));
      bars.appendChild(row);
    }
  }
  async function loadLog(o) {
    try {
      const note = await call("/v1/log/checkpoint", true);
      const cp = V.parseCheckpoint(note);
      const age = o.log && o.log.audit_log_checkpoint_age_seconds;
      setText("checkpoint", "tree size " + cp.size + " · root " + V.hex(cp.root) +
        (age !== undefined ? " · " + Math.round(age) + " s old" : ""));
    } catch (e) {
      setText("checkpoint", e.status === 404 ? "this collector keeps no verifiable log" : "unavailable: " + e.message, "warn");
    }
  }
  $("verify-chain-btn").addEventListener("click", async () => {
    setText("chain-result", "checking…");
    try {
      const r = await call("/v1/verify?full=1");   // every row again, not only the new ones
      if (r.ok) setText("chain-result", "intact: " + r.checked + " events checked", "ok");
      else setText("chain-result", "BROKEN at seq " + r.first_bad_seq + " (" + r.reason + ")", "fail");
    } catch (e) { setText("chain-result", e.message, "fail"); }
  });

  // ---- chart -----------------------------------------------------------------
  async function loadChart(params) {
    const p = new URLSearchParams();
    for (const k of ["since", "until"]) if (params.get(k)) p.set(k, params.get(k));
    const box = $("chart-events");
    clear(box);
    let s;
    try { s = await call("/v1/stats?" + p); } catch (e) { box.appendChild(el("p", e.message, "error")); return; }
    const NS = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(NS, "svg");
    const w = 600, h = 120, n = s.buckets.length || 1, max = Math.max(1, ...s.buckets.map((b) => b.total));
    svg.setAttribute("viewBox", "0 0 " + w + " " + (h + 20));
    svg.setAttribute("preserveAspectRatio", "none");
    s.buckets.forEach((b, i) => {
      const r = document.createElementNS(NS, "rect");
      const bh = (b.total / max) * h;
      r.setAttribute("x", String((i * w) / n));
      r.setAttribute("y", String(h - bh));
      r.setAttribute("width", String(Math.max(1, w / n - 1)));
      r.setAttribute("height", String(bh));
      const t = document.createElementNS(NS, "title");
      t.textContent = b.start + ": " + b.total;
      r.appendChild(t);
      svg.appendChild(r);
    });
    const label = document.createElementNS(NS, "text");
    label.setAttribute("x", "0"); label.setAttribute("y", String(h + 15)); label.setAttribute("font-size", "11");
    label.textContent = s.since + " → " + s.until + " · " + s.total + " events · max " + max + " per " + s.bucket_seconds + " s";
    svg.appendChild(label);
    box.appendChild(svg);
  }

  // ---- search ---------------------------------------------------------------
  function formParams() {
    const f = new FormData($("search-form"));
    const p = new URLSearchParams();
    for (const [k, v] of f.entries()) {
      const val = String(v).trim();
      if (!val) continue;
      // datetime-local has no zone: the form says UTC.
      p.set(k, k === "since" || k === "until" ? (val.length === 16 ? val + ":00" : val) + "Z" : val);
    }
    return p;
  }
  async function runSearch() {
    query = formParams();
    cursors = [null];
    loadChart(query);
    await showPage(null);
  }
  async function showPage(after) {
    const p = new URLSearchParams(query);
    if (after !== null) p.set("after", String(after));
    setText("search-error", "");
    let page;
    try { page = await call("/v1/events?" + p); } catch (e) { setText("search-error", e.message); return; }
    const body = $("results").tBodies[0];
    clear(body);
    for (const item of page.events) {
      const e = item.event || {};
      const tr = el("tr");
      tr.dataset.id = item.id;
      const path = get(e, "action.name") || get(e, "httpurl") || "";
      const where = [get(e, "kubernetes.namespacename"), get(e, "kubernetes.podname")].filter(Boolean).join("/");
      const cells = [item.seq, get(e, "timestamp") || item.received_at, get(e, "httpmethod"), get(e, "http.statuscode"),
        path, where, get(e, "subject.userid"), item.verified === null ? "—" : item.verified ? "yes" : "NO " + (item.verify_reason || "")];
      cells.forEach((c, i) => tr.appendChild(el("td", c === undefined ? "" : c, i === 4 ? "path" : i === 7 && item.verified === false ? "fail" : "")));
      tr.addEventListener("click", () => showEvent(item.id));
      body.appendChild(tr);
    }
    nextCursor = page.next_cursor;
    $("next-page").disabled = nextCursor === null;
    $("first-page").disabled = cursors.length <= 1;
    setText("page-info", "page " + cursors.length + " · " + page.events.length + " events");
  }
  $("search-form").addEventListener("submit", (ev) => { ev.preventDefault(); runSearch(); });
  $("next-page").addEventListener("click", () => { if (nextCursor !== null) { cursors.push(nextCursor); showPage(nextCursor); } });
  $("first-page").addEventListener("click", () => { cursors = [null]; showPage(null); });

  // ---- one event --------------------------------------------------------------
  let current = null;
  function flatten(v, prefix, out) {
    if (v !== null && typeof v === "object") {
      const entries = Array.isArray(v) ? v.map((x, i) => [String(i), x]) : Object.entries(v);
      if (entries.length === 0) out.push([prefix, Array.isArray(v) ? "[]" : "{}"]);
      for (const [k, x] of entries) flatten(x, prefix ? prefix + "." + k : k, out);
    } else {
      out.push([prefix, typeof v === "string" ? v : JSON.stringify(v)]);
    }
    return out;
  }
  async function showEvent(id) {
    let item, canonical;
    try {
      const enc = encodeURIComponent(id);
      [item, canonical] = await Promise.all([call("/v1/events/" + enc), call("/v1/events/" + enc + "/canonical", true)]);
    } catch (e) { setText("search-error", e.message); return; }
    current = { item, canonical };
    $("search").hidden = true;
    $("integrity").hidden = true;
    $("event").hidden = false;
    setText("event-id", item.id);
    setText("event-seq", "seq " + item.seq);
    setText("event-chain", item.chain_hash);
    setText("event-received", item.received_at);
    setText("event-verified", item.verified === null ? "no hash carried (nothing to verify)" :
      item.verified ? "yes" : "NO: " + (item.verify_reason || "unknown"), item.verified === false ? "fail" : item.verified ? "ok" : "");
    const b = item.batch;
    setText("event-batch", b ? "key " + b.keyid + " · source " + b.source + " · batch " + b.batch_seq + " · signature " + short(b.signature) +
      " · " + (b.event_hashes ? b.event_hashes.length : 0) + " events" : "none (no workload key signed this batch)");
    setText("event-proof", "press “Verify in this browser”");
    setText("verify-result", "");
    clear($("verify-steps"));
    const tbody = $("event-fields").tBodies[0];
    clear(tbody);
    for (const [k, v] of flatten(item.event, "", [])) {
      const tr = el("tr");
      tr.appendChild(el("th", k));
      tr.appendChild(el("td", v, "val"));
      tbody.appendChild(tr);
    }
    setText("event-canonical", canonical);
  }
  $("back").addEventListener("click", (ev) => {
    ev.preventDefault();
    $("event").hidden = true;
    $("search").hidden = false;
    $("integrity").hidden = false;
  });

  // ---- verify in this browser -------------------------------------------------
  async function neighbour(seq) {
    if (seq < 1) return null;
    const page = await call("/v1/events?limit=1&after=" + (seq - 1));
    const it = page.events[0];
    return it && it.seq === seq ? it : null;
  }
  $("verify-btn").addEventListener("click", async () => {
    if (!current) return;
    const { item, canonical } = current;
    const steps = $("verify-steps");
    clear(steps);
    let failed = false;
    const step = (cls, text) => { if (cls === "fail") failed = true; steps.appendChild(el("li", text, cls)); };
    setText("verify-result", "verifying…");
    try {
      const h = await V.eventHash(canonical);
      step("ok", "event hash recomputed: " + h);
      const claimed = item.event && item.event.security && item.event.security.hash;
      if (claimed !== undefined) step(claimed === h ? "ok" : "fail", claimed === h ? "matches the event's security.hash" : "differs from the event's security.hash " + claimed);
      // The link into the chain: from the previous event's chain hash.
      const prevHash = item.seq === 1 ? "0".repeat(64) : (await neighbour(item.seq - 1) || {}).chain_hash;
      if (prevHash) {
        const link = await V.chainLink(prevHash, item.seq, h);
        step(link === item.chain_hash ? "ok" : "fail", link === item.chain_hash ?
          "chain link seq " + item.seq + " recomputed from the previous link and this event" :
          "chain link seq " + item.seq + " does not match: this event was changed after it was chained");
      } else {
        step("warn", "previous event not stored (retention): chain link not checked");
      }
      const next = await neighbour(item.seq + 1);
      if (next) {
        const nh = await V.eventHash(await call("/v1/events/" + encodeURIComponent(next.id) + "/canonical", true));
        const link = await V.chainLink(item.chain_hash, item.seq + 1, nh);
        step(link === next.chain_hash ? "ok" : "fail", link === next.chain_hash ? "next chain link seq " + next.seq + " builds on this one" : "next chain link seq " + next.seq + " does not build on this one");
      }
      await verifyInclusion(item, canonical, step);
    } catch (e) {
      step("fail", "could not verify: " + e.message);
    }
    setText("verify-result", failed ? "FAILED" : "VERIFIED", failed ? "fail" : "ok");
  });

  async function verifyInclusion(item, canonical, step) {
    let proof;
    try {
      proof = await call("/v1/log/inclusion?seq=" + item.seq);
    } catch (e) {
      const why = e.status === 404 ? "this collector keeps no verifiable log" : e.message;
      setText("event-proof", why);
      step("warn", "inclusion proof: " + why);
      return;
    }
    const note = await call("/v1/log/checkpoint?size=" + proof.tree_size, true).catch(() => call("/v1/log/checkpoint", true));
    const cp = V.parseCheckpoint(note);
    setText("event-proof", "leaf " + proof.leaf_index + " of " + proof.tree_size + " · " + proof.proof.length + " hashes · checkpoint " + cp.origin);
    const record = await V.recordHash(canonical);
    step(V.hex(record) === proof.record_hash ? "ok" : "fail", V.hex(record) === proof.record_hash ?
      "record hash (SHA-256 of the stored canonical JSON) is the log's leaf data" : "record hash differs from the log's leaf: the stored event is not the one logged");
    const leaf = await V.leafHash(record);
    const root = await V.rootFromInclusion(proof.leaf_index, proof.tree_size, leaf, proof.proof.map(V.unhex));
    if (cp.size !== proof.tree_size) {
      step("warn", "checkpoint of size " + proof.tree_size + " not available; root not compared");
    } else {
      const ok = root !== null && V.equalBytes(root, cp.root);
      step(ok ? "ok" : "fail", ok ? "inclusion proof leads to the checkpoint root " + V.hex(cp.root) : "inclusion proof does not lead to the checkpoint root");
    }
    try {
      const key = await call("/v1/log/key", true);
      const sig = await V.verifyNote(cp, key);
      if (sig === null) step("warn", "this browser has no Ed25519 in WebCrypto: checkpoint signature not checked");
      else step(sig ? "ok" : "fail", sig ? "checkpoint signed by " + key.trim() : "checkpoint signature does not verify");
    } catch (e) {
      step("warn", "checkpoint key unavailable: " + e.message);
    }
  }
})();

// meshaudit: checks an auditor can run in the browser, with WebCrypto, so the
// answer does not rest on the collector's word (SPEC §5 chain, §9 log).
// Pure functions over bytes and strings; no DOM here.
"use strict";
(function () {
  const enc = new TextEncoder();

  function hex(buf) {
    return Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, "0")).join("");
  }
  function unhex(s) {
    if (!/^([0-9a-f]{2})*$/.test(s)) throw new Error("not lowercase hex");
    const out = new Uint8Array(s.length / 2);
    for (let i = 0; i < out.length; i++) out[i] = parseInt(s.substr(i * 2, 2), 16);
    return out;
  }
  function unb64(s) {
    const bin = atob(s);
    return Uint8Array.from(bin, (c) => c.charCodeAt(0));
  }
  function concat(...parts) {
    const n = parts.reduce((a, p) => a + p.length, 0);
    const out = new Uint8Array(n);
    let o = 0;
    for (const p of parts) { out.set(p, o); o += p.length; }
    return out;
  }
  async function sha256(bytes) {
    return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  }

  // The end (exclusive) of the JSON value starting at s[i], for canonical JSON.
  function valueEnd(s, i) {
    let depth = 0;
    for (let j = i; j < s.length; j++) {
      const c = s[j];
      if (c === '"') {
        j++;
        while (j < s.length && s[j] !== '"') { if (s[j] === "\\") j++; j++; }
        if (depth === 0) return j + 1;
      } else if (c === "{" || c === "[") {
        depth++;
      } else if (c === "}" || c === "]") {
        depth--;
        if (depth === 0) return j + 1;
        if (depth < 0) return j;
      } else if (depth === 0 && c === ",") {
        return j;
      }
    }
    return s.length;
  }

  // Canonical JSON of the event without its top-level "security" member: a
  // canonical object minus one member is the same text minus that member and
  // one comma, because canonical members do not depend on their neighbours.
  function withoutSecurity(canonical) {
    if (canonical[0] !== "{") throw new Error("the event is not a JSON object");
    const members = [];
    let i = 1;
    while (i < canonical.length && canonical[i] !== "}") {
      const keyEnd = valueEnd(canonical, i);
      const key = canonical.slice(i, keyEnd);
      if (canonical[keyEnd] !== ":") throw new Error("not canonical JSON");
      const end = valueEnd(canonical, keyEnd + 1);
      members.push({ key, start: i, end });
      i = canonical[end] === "," ? end + 1 : end;
    }
    const kept = members.filter((m) => m.key !== '"security"').map((m) => canonical.slice(m.start, m.end));
    return "{" + kept.join(",") + "}";
  }

  // SPEC §5: the event hash, and the chain link seq from the previous link.
  async function eventHash(canonical) {
    return hex(await sha256(enc.encode(withoutSecurity(canonical))));
  }
  async function chainLink(prevChainHash, seq, eventHashHex) {
    return hex(await sha256(enc.encode(prevChainHash + ":" + seq + ":" + eventHashHex)));
  }

  // SPEC §9: record hash over the stored canonical bytes, RFC 9162 leaf hash.
  async function recordHash(canonical) {
    return sha256(enc.encode(canonical));
  }
  async function leafHash(record) {
    return sha256(concat(new Uint8Array([0]), record));
  }
  async function nodeHash(l, r) {
    return sha256(concat(new Uint8Array([1]), l, r));
  }

  // RFC 9162 §2.1.3.2: the root an inclusion proof leads to (null if malformed).
  async function rootFromInclusion(leafIndex, treeSize, leaf, proof) {
    if (leafIndex >= treeSize) return null;
    let fn = leafIndex, sn = treeSize - 1, r = leaf;
    for (const p of proof) {
      if (sn === 0) return null;
      if (fn % 2 === 1 || fn === sn) {
        r = await nodeHash(p, r);
        if (fn % 2 === 0) {
          while (fn % 2 === 0 && fn !== 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
        }
      } else {
        r = await nodeHash(r, p);
      }
      fn = Math.floor(fn / 2); sn = Math.floor(sn / 2);
    }
    return sn === 0 ? r : null;
  }

  // C2SP signed note holding a tlog checkpoint.
  function parseCheckpoint(note) {
    const cut = note.indexOf("\n\n");
    if (cut < 0) throw new Error("not a signed note");
    const body = note.slice(0, cut + 1);
    const lines = body.split("\n");
    if (lines.length < 4) throw new Error("not a checkpoint");
    const sigs = note.slice(cut + 2).split("\n").filter((l) => l.startsWith("\u2014 ")).map((l) => {
      const [, name, b64] = l.split(" ");
      return { name, bytes: unb64(b64) };
    });
    return { body, origin: lines[0], size: Number(lines[1]), root: unb64(lines[2]), sigs };
  }

  // Ed25519 signature of a note under a verifier key `name+hexid+base64(0x01‖pub)`;
  // null when this browser's WebCrypto has no Ed25519.
  async function verifyNote(checkpoint, verifierKey) {
    const parts = verifierKey.trim().split("+");
    if (parts.length < 3) throw new Error("not a verifier key");
    const name = parts[0], keyId = unhex(parts[1]), raw = unb64(parts.slice(2).join("+"));
    if (raw[0] !== 1 || raw.length !== 33) throw new Error("not an Ed25519 verifier key");
    let key;
    try {
      key = await crypto.subtle.importKey("raw", raw.slice(1), { name: "Ed25519" }, false, ["verify"]);
    } catch (e) {
      return null;
    }
    for (const s of checkpoint.sigs) {
      if (s.name !== name || s.bytes.length !== 68) continue;
      if (s.bytes.slice(0, 4).some((b, i) => b !== keyId[i])) continue;
      if (await crypto.subtle.verify("Ed25519", key, s.bytes.slice(4), enc.encode(checkpoint.body))) return true;
    }
    return false;
  }

  function equalBytes(a, b) {
    return a.length === b.length && a.every((x, i) => x === b[i]);
  }

  window.MeshauditVerify = {
    hex, unhex, unb64, sha256, withoutSecurity, eventHash, chainLink, recordHash, leafHash,
    rootFromInclusion, parseCheckpoint, verifyNote, equalBytes,
  };
})();

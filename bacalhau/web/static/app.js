// The dashboard of one bacalhaud node: read-only views over its JSON API (/api/...).
// Plain DOM, no dependencies, nothing from another host. Data is only ever put into the
// page as text (textContent), never as HTML.
"use strict";

const POLL_MS = 1000;
let timer = null;    // the current page's refresh
let generation = 0;  // bumped on every navigation, so a late answer for an old page is dropped

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function state(name) {
  return el("span", { class: `state state-${name}`, text: name });
}

function short(id) {
  return id ? id.slice(0, 14) + (id.length > 14 ? "…" : "") : "";
}

function when(ns) {
  if (!ns) return "";
  return new Date(Number(ns) / 1e6).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

function bytes(n) {
  if (n === null || n === undefined) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = Number(n);
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${i ? v.toFixed(1) : v} ${units[i]}`;
}

function resources(r) {
  if (!r) return "";
  return `${r.cpu} cpu · ${bytes(r.memory_bytes)} mem · ${bytes(r.disk_bytes)} disk · ${r.gpu} gpu`;
}

function table(headers, rows, id) {
  return el("table", { id },
    el("thead", {}, el("tr", {}, ...headers.map((h) => el("th", { text: h })))),
    el("tbody", {}, ...rows));
}

async function api(path) {
  const resp = await fetch(`/api/${path}`, { cache: "no-store" });
  const body = await resp.json();
  if (!resp.ok) throw new Error(body.error || `${resp.status}`);
  return body;
}

function status(text, isError) {
  const node = document.getElementById("status");
  node.textContent = text;
  node.className = isError ? "error" : "";
}

function render(content) {
  document.getElementById("main").replaceChildren(...content);
}

// -- node and peers --------------------------------------------------------------------

async function nodePage(gen) {
  const node = await api("node");
  if (gen !== generation) return;
  const now = Date.now() * 1e6;
  const peers = node.peers.map((p) => {
    const rep = p.reputation;
    const penalised = rep.penalized_until_unix_nano > now;
    return el("tr", { "data-node-id": p.node_id },
      el("td", {}, el("code", { text: p.node_id, title: p.node_id })),
      el("td", { class: penalised ? "penalised" : (p.alive ? "alive" : "away"),
                 text: penalised ? "penalised" : (p.alive ? "alive" : "away") }),
      el("td", {}, el("code", { text: p.addresses.join(" ") })),
      el("td", { text: p.engines.join(", ") }),
      el("td", { text: resources(p.resources) }),
      el("td", { text: p.free ? resources(p.free) : "" }),
      el("td", { text: p.queued ?? "" }),
      el("td", { text: `${rep.results_accepted} accepted, ${rep.results_rejected} rejected` +
                       (penalised ? `; no work until ${when(rep.penalized_until_unix_nano)}` : "") }),
      el("td", { text: when(p.last_seen_unix_nano) }));
  });
  render([
    el("h1", { text: "Node" }),
    el("section", { id: "node" },
      el("dl", {},
        el("dt", { text: "ID" }), el("dd", {}, el("code", { id: "node-id", text: node.node_id })),
        el("dt", { text: "version" }), el("dd", { text: node.version }),
        el("dt", { text: "address" }), el("dd", {}, el("code", { text: node.address })),
        el("dt", { text: "engines" }), el("dd", { text: node.engines.join(", ") }),
        el("dt", { text: "labels" }),
        el("dd", { text: Object.entries(node.labels).map(([k, v]) => `${k}=${v}`).join(", ") || "none" }),
        el("dt", { text: "capacity" }), el("dd", { text: resources(node.capacity) }),
        el("dt", { text: "free" }), el("dd", { text: resources(node.free) }),
        el("dt", { text: "executions queued" }), el("dd", { text: node.queued }))),
    el("h2", { text: `Peers (${node.peers.length})` }),
    el("section", {},
      node.peers.length ? table(
        ["node", "state", "addresses", "engines", "capacity", "free", "queued", "reputation here", "last seen"],
        peers, "peers") : el("p", { class: "muted", id: "peers", text: "No peers known yet." })),
  ]);
}

// -- jobs ------------------------------------------------------------------------------

async function jobsPage(gen) {
  const { jobs } = await api("jobs?limit=200");
  if (gen !== generation) return;
  const rows = jobs.map((j) => el("tr", { "data-job-id": j.id },
    el("td", {}, el("a", { href: `#/jobs/${encodeURIComponent(j.id)}` }, el("code", { text: j.id }))),
    el("td", {}, state(j.state)),
    el("td", { text: j.engine }),
    el("td", { text: j.shard_count }),
    el("td", { text: j.executions }),
    el("td", { text: when(j.create_time_unix_nano) }),
    el("td", { text: j.message })));
  render([
    el("h1", { text: `Jobs (${jobs.length})` }),
    el("section", {},
      jobs.length ? table(["job", "state", "engine", "shards", "executions", "created", "message"], rows, "jobs")
        : el("p", { class: "muted", id: "jobs", text: "No jobs yet." })),
  ]);
}

// -- one job ---------------------------------------------------------------------------

function jobPage(id, gen) {
  let lastSeq = 0;
  let final = false;
  let traced = false;
  const events = el("tbody", {});
  const files = new Map();  // execution ID -> its files section, fetched once
  const parts = {
    head: el("section", { id: "job" }),
    shards: el("section", { id: "shards" }),
    executions: el("section", { id: "executions" }),
    results: el("section", { id: "results" }, el("h2", { text: "Result files" })),
    trace: el("section", { id: "trace" }, el("h2", { text: "Trace" }),
      el("p", { class: "muted", text: "Shown once the job has ended." })),
    events: el("section", { id: "events" }, el("h2", { text: "Events (live)" }),
      el("div", { class: "events" }, table(["#", "time", "type", "node", "shard", "state", "detail"], [], "event-table"))),
  };
  parts.events.querySelector("tbody").replaceWith(events);
  render([el("h1", {}, "Job ", el("code", { text: id })), ...Object.values(parts)]);

  async function showFiles(job) {
    for (const ex of job.executions) {
      if (!ex.has_files || files.has(ex.id)) continue;
      files.set(ex.id, null);
      const listing = await api(`jobs/${encodeURIComponent(job.id)}/executions/${encodeURIComponent(ex.id)}/files`);
      if (gen !== generation) return;
      const base = `/api/jobs/${encodeURIComponent(job.id)}/executions/${encodeURIComponent(ex.id)}/files/`;
      const rows = listing.files.map((f) => el("tr", { "data-path": f.path },
        el("td", {}, el("a", { href: base + f.path.split("/").map(encodeURIComponent).join("/") + "?view=1",
                               class: "result-file" }, el("code", { text: f.path }))),
        el("td", { text: bytes(f.size) }),
        el("td", {}, el("code", { text: f.cid }))));
      parts.results.append(el("h3", {}, `shard ${ex.shard}, execution `, el("code", { text: ex.id }),
                               ", root ", el("code", { text: listing.root_cid })),
                           table(["file", "size", "CID"], rows));
    }
  }

  async function refresh() {
    const job = await api(`jobs/${encodeURIComponent(id)}`);
    if (gen !== generation) return;
    id = job.id;
    final = ["completed", "failed", "cancelled"].includes(job.state);
    parts.head.replaceChildren(el("dl", {},
      el("dt", { text: "state" }), el("dd", { id: "job-state" }, state(job.state)),
      el("dt", { text: "message" }), el("dd", { text: job.message || "" }),
      el("dt", { text: "engine" }), el("dd", { text: job.engine }),
      el("dt", { text: "requester" }), el("dd", {}, el("code", { text: job.requester_node_id })),
      el("dt", { text: "owner" }), el("dd", {}, el("code", { text: job.client_id })),
      el("dt", { text: "created" }), el("dd", { text: when(job.create_time_unix_nano) }),
      el("dt", { text: "updated" }), el("dd", { text: when(job.update_time_unix_nano) }),
      el("dt", { text: "spec" }), el("dd", {}, el("details", {}, el("summary", { text: "show" }),
        el("pre", { class: "mono", text: JSON.stringify(job.spec, null, 2) })))));
    const sh = job.shards;
    parts.shards.replaceChildren(
      el("h2", { text: `Shards (${sh.count})` }),
      el("p", { id: "shard-counts" }, ...Object.entries(sh.by_state).filter(([, n]) => n)
        .flatMap(([name, n]) => [state(name), ` ${n}  `])),
      el("div", { class: "shardbar" }, ...sh.states.map((s, i) =>
        el("span", { class: `state state-${s}`, title: `shard ${i}: ${s}` }))));
    parts.executions.replaceChildren(el("h2", { text: `Executions (${job.executions.length})` }),
      table(["execution", "node", "shard", "state", "exit code", "result", "message"],
        job.executions.map((ex) => el("tr", { "data-execution-id": ex.id },
          el("td", {}, el("code", { text: ex.id })),
          el("td", {}, el("code", { text: short(ex.node_id), title: ex.node_id })),
          el("td", { text: ex.shard }),
          el("td", {}, state(ex.state)),
          el("td", { text: ex.exit_code ?? "" }),
          el("td", {}, el("code", { text: ex.result_cid })),
          el("td", {}, ex.message, ex.stderr_tail ? el("pre", { class: "mono", text: ex.stderr_tail }) : null))),
        "execution-table"));
    const { events: fresh } = await api(`jobs/${encodeURIComponent(id)}/events?after=${lastSeq}`);
    if (gen !== generation) return;
    for (const ev of fresh) {
      lastSeq = Math.max(lastSeq, ev.seq);
      events.append(el("tr", { "data-seq": ev.seq },
        el("td", { text: ev.seq }), el("td", { text: when(ev.time_unix_nano) }),
        el("td", { text: ev.type }), el("td", {}, el("code", { text: short(ev.node_id), title: ev.node_id })),
        el("td", { text: ev.shard }),
        el("td", { text: ev.job_state || ev.execution_state }), el("td", { text: ev.detail })));
    }
    await showFiles(job);
    if (final && !traced) {
      traced = true;
      await showTrace(job.id);
    }
    return final;
  }

  // Each span a bar on the job's time axis, with its node and duration beside it.
  async function showTrace(jobId) {
    const { spans, missing_nodes: missing, recorded } = await api(`jobs/${encodeURIComponent(jobId)}/trace`);
    if (gen !== generation) return;
    if (!recorded || !spans.length) {
      parts.trace.replaceChildren(el("h2", { text: "Trace" }),
        el("p", { class: "muted", text: recorded ? "No spans of this job are kept any more."
                                                 : "This node keeps no traces (serve --tracing off)." }));
      return;
    }
    const t0 = Math.min(...spans.map((s) => Number(s.start_unix_nano)));
    const t1 = Math.max(...spans.map((s) => Number(s.end_unix_nano || s.start_unix_nano)));
    const whole = Math.max(t1 - t0, 1);
    const rows = spans.map((s) => {
      const start = Number(s.start_unix_nano), end = Number(s.end_unix_nano || s.start_unix_nano);
      const bar = el("span", { class: `span-bar${s.error ? " span-error" : ""}`,
                               title: `${s.name} on ${s.node_id}: ${((end - start) / 1e6).toFixed(2)} ms` });
      bar.style.marginLeft = `${(100 * (start - t0)) / whole}%`;
      bar.style.width = `${Math.max((100 * (end - start)) / whole, 0.3)}%`;
      return el("tr", { "data-span": s.name },
        el("td", { text: s.name }),
        el("td", {}, el("code", { text: short(s.node_id), title: s.node_id })),
        el("td", { class: "num", text: `${((end - start) / 1e6).toFixed(2)} ms` }),
        el("td", { class: "waterfall" }, bar));
    });
    parts.trace.replaceChildren(
      el("h2", { text: `Trace (${spans.length} spans, ${(whole / 1e6).toFixed(1)} ms)` }),
      ...(missing.length ? [el("p", { class: "muted", text: `Nodes that did not answer: ${missing.map(short).join(", ")}` })] : []),
      table(["span", "node", "duration", "time"], rows, "trace-table"));
  }
  return refresh;
}

// -- routing ---------------------------------------------------------------------------

function route() {
  generation += 1;
  const gen = generation;
  clearTimeout(timer);
  const hash = location.hash.replace(/^#/, "") || "/";
  const job = hash.match(/^\/jobs\/(.+)$/);
  let step;
  if (job) step = jobPage(decodeURIComponent(job[1]), gen);
  else if (hash === "/jobs") step = () => jobsPage(gen);
  else step = () => nodePage(gen);
  const tick = async () => {
    let done = false;
    try {
      done = await step();
      status(`updated ${new Date().toLocaleTimeString()}`);
    } catch (e) {
      status(String(e.message || e), true);
    }
    // A final job changes no more; everything else is polled.
    if (gen === generation && !done) timer = setTimeout(tick, POLL_MS);
  };
  tick();
}

window.addEventListener("hashchange", route);
route();

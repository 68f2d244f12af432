// durably-sched dashboard: live updates (EventSource) and actions (fetch) for the server-rendered
// pages. Written for this project; no framework, no build step, works offline.
"use strict";

(function () {
  const meta = (name) => (document.querySelector(`meta[name="${name}"]`) || {}).content || "";
  const ROOT = meta("durably-root");
  const CSRF = meta("durably-csrf");
  const TERMINAL = ["completed", "failed", "cancelled"];

  // -- helpers ---------------------------------------------------------------------------------
  function flash(text, kind) {
    const box = document.getElementById("flash");
    if (!box) return;
    box.textContent = text;
    box.className = "flash " + (kind || "info");
    box.hidden = false;
    clearTimeout(flash.timer);
    flash.timer = setTimeout(() => { box.hidden = true; }, 8000);
  }

  async function api(method, path, body) {
    const headers = { "X-Durably-CSRF": CSRF, "Accept": "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(ROOT + "/api" + path, {
      method, headers, credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = null;
    try { data = await response.json(); } catch (e) { data = null; }
    if (!response.ok) {
      const detail = data && data.detail ? data.detail : response.status + " " + response.statusText;
      throw new Error(detail);
    }
    return data;
  }

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") node.textContent = v;
      else if (k === "class") node.className = v;
      else node.setAttribute(k, v);
    }
    for (const child of children || []) node.append(child);
    return node;
  }

  const pad = (n) => String(n).padStart(2, "0");
  function localText(date, timeOnly) {
    const t = `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
    if (timeOnly) return t;
    return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ${t}`;
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    if (seconds < 1) return Math.round(seconds * 1000) + " ms";
    if (seconds < 60) return seconds.toFixed(1) + " s";
    const m = Math.floor(seconds / 60), s = Math.round(seconds % 60);
    return m < 60 ? `${m}m${pad(s)}s` : `${Math.floor(m / 60)}h${pad(m % 60)}m`;
  }

  // Durations of running runs tick: [data-duration] is the duration when the page (or the last
  // update) was made, counted on from then while [data-ticking="1"].
  function setDuration(node, seconds, running) {
    if (!node) return;
    node.dataset.duration = seconds === null || seconds === undefined ? "" : String(seconds);
    node.dataset.since = String(Date.now());
    node.dataset.ticking = running ? "1" : "0";
    node.textContent = duration(seconds);
  }
  function tickDurations() {
    for (const node of document.querySelectorAll('[data-duration][data-ticking="1"]')) {
      if (node.dataset.duration === "") continue;
      const since = Number(node.dataset.since || PAGE_LOADED);
      node.textContent = duration(Number(node.dataset.duration) + (Date.now() - since) / 1000);
    }
  }
  const PAGE_LOADED = Date.now();
  setInterval(tickDurations, 1000);

  function errorCell(cell, run) {
    if (!cell) return;
    cell.replaceChildren();
    cell.removeAttribute("title");
    if (!run.error) return;
    if (run.failed_step_name) cell.append(el("span", { class: "mono", text: run.failed_step_name }), ": ");
    cell.append(run.error);
    cell.title = run.error;
  }

  // <time datetime="UTC"> in the viewer's zone; schedule times keep their own zone and add the viewer's.
  function renderTimes(scope) {
    for (const node of (scope || document).querySelectorAll("time[datetime]")) {
      if (node.dataset.rendered) continue;
      const date = new Date(node.getAttribute("datetime"));
      if (isNaN(date)) continue;
      node.dataset.rendered = "1";
      const local = localText(date, node.dataset.format === "time");
      const zone = node.dataset.zoneText;
      if (zone) {
        node.textContent = zone.replace("T", " ");
        node.append(el("span", { class: "viewer", text: " · your time " + local }));
      } else {
        node.textContent = local;
      }
      node.title = date.toISOString();
    }
  }

  // -- actions ---------------------------------------------------------------------------------
  const ACTIONS = {
    cancel: (b) => api("POST", `/runs/${b.dataset.run}/cancel`).then(() => location.reload()),
    retry: (b) => api("POST", `/runs/${b.dataset.run}/retry`).then(() => location.reload()),
    retrigger: (b) => api("POST", `/runs/${b.dataset.run}/retrigger`).then((d) => { location.href = `${ROOT}/runs/${d.run.id}`; }),
    delete: (b) => api("DELETE", `/runs/${b.dataset.run}`).then(() => { location.href = `${ROOT}/runs`; }),
    "trigger-slot": (b) => api("POST", `/schedules/${encodeURIComponent(b.dataset.schedule)}/trigger`, {}).then((d) => {
      if (d.run) flash(`${d.schedule} ${d.fire_time}: ${d.outcome} (run ${d.run.id.slice(0, 8)})`, "ok");
      else flash(`${d.schedule} ${d.fire_time}: ${d.outcome}${d.recorded ? " (recorded as " + d.recorded + ")" : ""}`, "info");
      setTimeout(() => location.reload(), 1200);
    }),
    pause: (b) => {
      const reason = window.prompt(`Why pause ${b.dataset.schedule}? (optional; shown with the pause)`, "");
      if (reason === null) return Promise.reject(new Error(""));  // cancelled: nothing to say
      const body = reason.trim() ? { reason: reason.trim() } : {};
      return api("POST", `/schedules/${encodeURIComponent(b.dataset.schedule)}/pause`, body).then((d) => {
        flash(d.changed ? `${b.dataset.schedule} paused` : `${b.dataset.schedule} was already paused; nothing changed`, "ok");
        setTimeout(() => location.reload(), 600);
      });
    },
    "delete-schedule": (b) => {
      const note = window.prompt(`Delete ${b.dataset.schedule}? It fires nothing more; its runs and versions stay. Why? (kept with the version)`, "");
      if (note === null) return Promise.reject(new Error(""));
      const body = note.trim() ? { note: note.trim() } : {};
      return api("DELETE", `/schedules/${encodeURIComponent(b.dataset.schedule)}`, body).then(() => { location.href = `${ROOT}/`; });
    },
    "rollback-schedule": (b) => {
      const note = window.prompt(`Roll ${b.dataset.schedule} back to version ${b.dataset.version}? Why? (kept with the new version)`, "");
      if (note === null) return Promise.reject(new Error(""));
      const body = { to: parseInt(b.dataset.version, 10) };
      if (note.trim()) body.note = note.trim();
      return api("POST", `/schedules/${encodeURIComponent(b.dataset.schedule)}/rollback`, body).then(() => location.reload());
    },
    resume: (b) => api("POST", `/schedules/${encodeURIComponent(b.dataset.schedule)}/resume`, { catchup: b.dataset.catchup === "1" }).then((d) => {
      const caught = d.caught_up.filter((c) => c.outcome === "triggered").length;
      flash(`${b.dataset.schedule} resumed` + (b.dataset.catchup === "1" ? `; ${caught} paused fire time(s) run` : ""), "ok");
      setTimeout(() => location.reload(), 600);
    }),
  };

  document.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    event.preventDefault();
    if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
    button.disabled = true;
    ACTIONS[button.dataset.action](button).catch((err) => { if (err.message) flash(err.message, "error"); button.disabled = false; });
  });

  // -- the trigger form of a job ---------------------------------------------------------------
  // One control of a job's input form as its value (undefined: left empty).
  function fieldValue(field, name) {
    const type = field.dataset.type;
    if (type === "boolean") return field.checked;
    const raw = field.value.trim();
    if (raw === "") return undefined;
    if (type === "integer") return parseInt(raw, 10);
    if (type === "number") return parseFloat(raw);
    if (type === "json") {
      try { return JSON.parse(raw); } catch (e) { throw new Error(`${name}: not valid JSON`); }
    }
    return raw;
  }

  function labelsOf(text) {
    const labels = {};
    for (const pair of text.split(/\s+/).filter(Boolean)) {
      const at = pair.indexOf("=");
      if (at < 1) throw new Error(`labels: '${pair}' is not KEY=VALUE`);
      labels[pair.slice(0, at)] = pair.slice(at + 1);
    }
    return labels;
  }

  function formInput(form) {
    const input = {};
    const extra = {};
    for (const field of form.querySelectorAll("[name]")) {
      const name = field.name;
      if (name.startsWith("@")) { if (field.value.trim()) extra[name.slice(1)] = field.value.trim(); continue; }
      const value = fieldValue(field, name);
      if (value !== undefined) input[name] = value;
    }
    const body = { input };
    if (extra.idempotency_key) body.idempotency_key = extra.idempotency_key;
    if (extra.concurrency_key) body.concurrency_key = extra.concurrency_key;
    if (extra.labels) body.labels = labelsOf(extra.labels);
    return body;
  }

  // -- the create and edit form of a schedule (schedules as data) -------------------------------
  function scheduleBody(form) {
    const body = { input: {} };
    const fieldset = form.querySelector("fieldset[data-job-input]:not([disabled])");
    if (fieldset) {
      for (const field of fieldset.querySelectorAll("[name]")) {
        const name = field.name.slice("input.".length);
        const value = fieldValue(field, "input." + name);
        if (value !== undefined) body.input[name] = value;
      }
    }
    for (const field of form.querySelectorAll(":scope > label [name], :scope > details [name]")) {
      const name = field.name, raw = field.type === "checkbox" ? field.checked : field.value.trim();
      if (name === "labels") body.labels = labelsOf(raw);
      else if (name === "enabled") body.enabled = raw;
      else if (name === "pause_after_failures") body.pause_after_failures = raw === "" ? null : parseInt(raw, 10);
      else if (name === "timeout") body.timeout = raw === "" ? null : raw;
      else if (raw !== "") body[name] = raw;
    }
    return body;
  }

  for (const form of document.querySelectorAll("form[data-schedule-form]")) {
    const select = form.querySelector("[data-job-select]");
    if (select) select.addEventListener("change", () => {
      for (const fs of form.querySelectorAll("fieldset[data-job-input]")) {
        const on = fs.dataset.jobInput === select.value;
        fs.hidden = !on; fs.disabled = !on;
      }
    });
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      let body;
      try { body = scheduleBody(form); } catch (err) { flash(err.message, "error"); return; }
      const editing = form.dataset.scheduleForm;
      const request = editing
        ? api("PATCH", `/schedules/${encodeURIComponent(editing)}`, body)
        : api("POST", "/schedules", body);
      request.then((d) => { location.href = `${ROOT}/schedules/${encodeURIComponent(d.schedule.name)}`; })
        .catch((err) => flash(err.message, "error"));
    });
  }

  for (const form of document.querySelectorAll("form[data-trigger-job]")) {
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      let body;
      try { body = formInput(form); } catch (err) { flash(err.message, "error"); return; }
      api("POST", `/jobs/${encodeURIComponent(form.dataset.triggerJob)}/trigger`, body)
        .then((d) => { location.href = `${ROOT}/runs/${d.run.id}`; })
        .catch((err) => flash(err.message, "error"));
    });
  }

  // -- backfill with a preview -----------------------------------------------------------------
  for (const form of document.querySelectorAll("form[data-backfill]")) {
    const name = form.dataset.backfill;
    const box = form.parentElement.querySelector("[data-backfill-preview]");
    let range = null;
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      range = { from: form.elements.from.value.trim(), to: form.elements.to.value.trim() };
      api("POST", `/schedules/${encodeURIComponent(name)}/backfill`, { ...range, dry_run: true }).then((d) => {
        const list = box.querySelector("[data-backfill-list]");
        list.replaceChildren(...d.fire_times.slice(0, 50).map((t) => el("li", { text: t.local.replace("T", " ") + "  " + t.idempotency_key })));
        box.querySelector("[data-backfill-summary]").textContent =
          `${d.fire_times.length} fire time(s)` + (d.fire_times.length > 50 ? " (first 50 shown)" : "") + "; already handled ones are left alone.";
        box.hidden = false;
      }).catch((err) => flash(err.message, "error"));
    });
    const run = box && box.querySelector("[data-backfill-run]");
    if (run) run.addEventListener("click", (event) => {
      event.preventDefault();
      if (!range || !window.confirm(`Backfill ${name} from ${range.from} to ${range.to}?`)) return;
      run.disabled = true;
      api("POST", `/schedules/${encodeURIComponent(name)}/backfill`, range).then((d) => {
        flash("backfill: " + Object.entries(d.counts).map(([k, v]) => `${v} ${k}`).join(", "), "ok");
        setTimeout(() => location.reload(), 1200);
      }).catch((err) => { flash(err.message, "error"); run.disabled = false; });
    });
  }

  // -- the runs filter form: labels become label.KEY=VALUE -------------------------------------
  for (const form of document.querySelectorAll("form[data-filters]")) {
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const params = new URLSearchParams();
      for (const field of form.querySelectorAll("[name]")) {
        if (field.multiple) { for (const o of field.selectedOptions) params.append(field.name, o.value); continue; }
        const value = field.value.trim();
        if (!value) continue;
        if (field.name === "labels") {
          for (const pair of value.split(/\s+/)) {
            const at = pair.indexOf("=");
            if (at < 1) { flash(`labels: '${pair}' is not KEY=VALUE`, "error"); return; }
            params.append("label." + pair.slice(0, at), pair.slice(at + 1));
          }
        } else params.append(field.name, value);
      }
      location.href = `${ROOT}/runs?${params}`;
    });
  }

  // -- live run list ---------------------------------------------------------------------------
  function progressCell(cell, progress) {
    cell.replaceChildren();
    if (!progress) return;
    const bar = el("progress", { max: String(progress.total || 1), value: String(progress.total ? progress.current : 0) });
    cell.append(bar, " " + progress.current + (progress.total ? "/" + progress.total : ""));
  }

  function statusBadge(node, status) {
    node.textContent = status;
    node.className = node.className.replace(/\b(pending|running|waiting|completed|failed|cancelled)\b/g, "").trim() + " " + status;
  }

  function matches(box, run) {
    if (box.dataset.firstPage !== "1" || box.dataset.filterAny === "1") return false;
    const jobs = (box.dataset.filterJob || "").split(",").filter(Boolean);
    const statuses = (box.dataset.filterStatus || "").split(",").filter(Boolean);
    if (jobs.length && !jobs.includes(run.job_name)) return false;
    if (statuses.length && !statuses.includes(run.status)) return false;
    if (box.dataset.filterSchedule && box.dataset.filterSchedule !== run.schedule) return false;
    return true;
  }

  function newRow(run) {
    const row = el("tr", { "data-run-id": run.id }, [
      el("td", { class: "mono" }, [el("a", { href: `${ROOT}/runs/${run.id}`, title: run.id, text: run.id.slice(0, 8) })]),
      el("td", { text: run.job_name }),
      el("td", {}, [el("span", { class: "status " + run.status, "data-field": "status", text: run.status })]),
      el("td", { "data-field": "progress" }),
      el("td", {}, [el("time", { datetime: run.created_at, text: run.created_at })]),
      el("td", { "data-field": "duration" }),
      el("td", { class: "muted", text: run.schedule || run.idempotency_key || "–" }),
      el("td", { class: "error-cell clip", "data-field": "error" }),
    ]);
    progressCell(row.querySelector('[data-field="progress"]'), run.progress);
    setDuration(row.querySelector('[data-field="duration"]'), run.duration, run.status === "running");
    errorCell(row.querySelector('[data-field="error"]'), run);
    return row;
  }

  const liveTable = document.querySelector("table[data-live-runs]");
  if (liveTable && window.EventSource) {
    const box = liveTable.closest("[data-first-page]") || liveTable.parentElement;
    const body = liveTable.tBodies[0];
    const source = new EventSource(ROOT + "/api/runs/events");
    const onRun = (event) => {
      const data = JSON.parse(event.data);
      if (event.type === "run:delete") { const row = body.querySelector(`tr[data-run-id="${data.id}"]`); if (row) row.remove(); return; }
      const run = data.run;
      let row = body.querySelector(`tr[data-run-id="${run.id}"]`);
      if (!row) {
        if (!matches(box, run)) return;
        const empty = body.querySelector("tr.empty");
        if (empty) empty.remove();
        row = newRow(run);
        body.prepend(row);
        renderTimes(row);
        while (body.rows.length > 100) body.deleteRow(body.rows.length - 1);
        return;
      }
      statusBadge(row.querySelector('[data-field="status"]'), run.status);
      progressCell(row.querySelector('[data-field="progress"]'), run.progress);
      setDuration(row.querySelector('[data-field="duration"]'), run.duration, run.status === "running");
      errorCell(row.querySelector('[data-field="error"]'), run);
    };
    for (const type of ["run:trigger", "run:start", "run:progress", "step:complete", "run:complete", "run:fail", "run:cancel", "run:retry", "run:release", "run:retry-scheduled", "run:waiting", "run:woken", "run:delete"]) {
      source.addEventListener(type, onRun);
    }
    source.addEventListener("feed:reset", () => location.reload());
  }

  // -- live run page ---------------------------------------------------------------------------
  const runBox = document.querySelector("[data-run]");
  if (runBox && runBox.classList.contains("run") && window.EventSource) {
    const runId = runBox.dataset.run;
    const field = (name) => runBox.querySelector(`[data-field="${name}"]`);
    let known = TERMINAL.includes(runBox.dataset.status);
    const steps = runBox.querySelector("[data-steps]");
    const logs = runBox.querySelector("[data-logs]");
    const source = new EventSource(`${ROOT}/api/runs/${runId}/events`);
    const setProgress = (p) => {
      if (!p) return;
      const bar = field("bar");
      bar.max = p.total || 1;
      bar.value = p.total ? p.current : 0;
      field("progress-text").textContent = p.current + (p.total ? "/" + p.total : "") + (p.message ? " · " + p.message : "");
    };
    const setStatus = (status) => {
      statusBadge(field("status"), status);
      runBox.dataset.status = status;
      const shown = field("duration");
      if (shown && status !== "running" && shown.dataset.ticking === "1") tickDurations();
      if (shown) shown.dataset.ticking = status === "running" ? "1" : "0";
    };
    let runStarted = null;
    let runEnded = null;  // a finished run's timeline ends where the run did, not at the reader's now
    // A large value comes as {"$truncated": bytes}; the page itself (reloaded) shows it whole.
    const valueText = (v) => (v && typeof v === "object" && "$truncated" in v)
      ? `(${v.$truncated} bytes: reload the page to see it)` : JSON.stringify(v);
    const renderSteps = (list) => {
      if (!list.length) return;
      const start = runStarted ? new Date(runStarted).getTime() : new Date(list[0].started_at).getTime();
      const end = Math.max(runEnded ?? Date.now(), ...list.map((s) => new Date(s.completed_at).getTime()));
      const span = Math.max(1, end - start);
      steps.replaceChildren(...list.map((s) => {
        const offset = Math.max(0, (new Date(s.started_at).getTime() - start) / span * 100);
        const width = Math.max(0.5, s.duration * 1000 / span * 100);
        const bar = el("span", { class: "bar", style: `margin-left: ${offset.toFixed(2)}%; width: ${width.toFixed(2)}%` });
        return el("tr", {}, [
          el("td", { text: String(s.index) }), el("td", { class: "mono", text: s.name }),
          el("td", { class: "timeline" }, [bar]), el("td", { text: duration(s.duration) }),
          el("td", { class: "mono small clip", text: valueText(s.output) }),
        ]);
      }));
      field("step-count").textContent = list.length;
    };
    const logRow = (e, when) => el("tr", { class: "level-" + e.level }, [
      el("td", { text: localText(when, true) }), el("td", { text: e.level }),
      el("td", { class: "mono", text: e.step_name || "–" }),
      el("td", { text: e.message + (e.data && Object.keys(e.data).length ? " " + valueText(e.data) : "") }),
    ]);
    let stepsTimer = null;
    const reloadSteps = () => {  // step events carry no stored times: read the steps, at most ~3/s
      if (stepsTimer) return;
      stepsTimer = setTimeout(() => {
        stepsTimer = null;
        api("GET", `/runs/${runId}/steps`).then((d) => renderSteps(d.steps)).catch(() => {});
      }, 300);
    };
    source.addEventListener("run:snapshot", (event) => {
      const data = JSON.parse(event.data);
      runStarted = data.run.started_at;
      runEnded = TERMINAL.includes(data.run.status) && runStarted && data.run.duration !== null
        ? new Date(runStarted).getTime() + data.run.duration * 1000 : null;
      setDuration(field("duration"), data.run.duration, data.run.status === "running");
      setStatus(data.run.status);
      setProgress(data.run.progress);
      renderSteps(data.steps);
      if (data.logs.length) {
        if (!event.lastEventId || logs.querySelector("tr.empty")) logs.replaceChildren();
        const shown = new Set([...logs.querySelectorAll("tr[data-log-id]")].map((r) => r.dataset.logId));
        for (const e of data.logs) {
          if (shown.has(String(e.id))) continue;
          const row = logRow(e, new Date(e.created_at));
          row.dataset.logId = String(e.id);
          logs.append(row);
        }
      }
      if (TERMINAL.includes(data.run.status)) source.close();
    });
    source.addEventListener("run:progress", (event) => setProgress(JSON.parse(event.data).progress));
    source.addEventListener("run:start", (event) => {
      const shown = field("duration");
      if (shown && shown.dataset.duration === "") setDuration(shown, 0, true);  // its first start
      setStatus("running");
      const attempt = JSON.parse(event.data).attempt;
      field("attempt").textContent = attempt;
      const note = field("retry-note");  // the error box above is a previous attempt's: say so
      if (note) note.textContent = `retrying: attempt ${attempt} is running`;
    });
    // A released attempt (a graceful stop) or a failure to retry: reload for the new attempt row
    // and the error it left.
    source.addEventListener("run:release", () => { setStatus("pending"); setTimeout(() => location.reload(), 800); });
    // A durable wait ended the attempt: reload for what the run waits for and the attempt row.
    source.addEventListener("run:waiting", () => { setStatus("waiting"); setTimeout(() => location.reload(), 800); });
    source.addEventListener("run:retry", () => setStatus("pending"));
    source.addEventListener("run:retry-scheduled", () => { setStatus("pending"); setTimeout(() => location.reload(), 800); });
    source.addEventListener("run:woken", () => setStatus("pending"));
    source.addEventListener("step:complete", reloadSteps);
    source.addEventListener("log:write", (event) => {
      const e = JSON.parse(event.data);
      const empty = logs.querySelector("tr.empty");
      if (empty) empty.remove();
      const row = logRow(e, e.created_at ? new Date(e.created_at) : new Date(e.timestamp * 1000));
      if (event.lastEventId) row.dataset.logId = event.lastEventId;
      logs.append(row);
    });
    const finish = (status) => () => {
      setStatus(status);
      source.close();
      if (!known) { known = true; setTimeout(() => location.reload(), 800); }  // output, error, actions
    };
    source.addEventListener("run:complete", finish("completed"));
    source.addEventListener("run:fail", finish("failed"));
    source.addEventListener("run:cancel", finish("cancelled"));
    source.addEventListener("run:delete", () => { source.close(); flash("this run was deleted", "error"); });
    source.addEventListener("feed:dropped", () => location.reload());
  }

  // Read this page again and put each [data-refresh] section of `box` in place of the old one.
  async function swapSections(box) {
    const response = await fetch(location.href, { credentials: "same-origin", headers: { Accept: "text/html" } });
    if (!response.ok) return;
    const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
    for (const node of box.querySelectorAll("[data-refresh]")) {
      const update = fresh.querySelector(`[data-refresh="${node.dataset.refresh}"]`);
      if (!update) continue;
      node.replaceWith(update);
      renderTimes(update);
    }
    box.dataset.refreshes = String(Number(box.dataset.refreshes || 0) + 1);
  }

  // -- the workers page stays live: read again every 5 s (heartbeats, runs held, schedule buckets
  // moving between schedulers while serves start and stop) -----------------------------------------
  const liveWorkers = document.querySelector("[data-live-workers]");
  if (liveWorkers) {
    const again = () => setTimeout(() => swapSections(liveWorkers).catch(() => {}).finally(again), 5000);
    again();
  }

  // -- the schedule page stays live: its facts (next fire times, state), pictures and history are
  // read again after each fire time passes, when a run of the schedule changes, and every 30 s ----
  const liveSchedule = document.querySelector("[data-live-schedule]");
  if (liveSchedule) {
    const name = liveSchedule.dataset.liveSchedule;
    let timer = null, soonTimer = null, busy = false;
    const plan = () => {
      clearTimeout(timer);
      const facts = liveSchedule.querySelector('[data-refresh="facts"]');
      const next = facts && facts.dataset.next ? new Date(facts.dataset.next).getTime() : NaN;
      let wait = 30000;
      if (!isNaN(next)) wait = Math.min(wait, Math.max(1000, next - Date.now() + 1500));
      timer = setTimeout(refresh, wait);
    };
    async function refresh() {
      if (busy) return;
      busy = true;
      try {
        await swapSections(liveSchedule);
      } catch (err) {
        // the next refresh tries again
      } finally {
        busy = false;
        plan();
      }
    }
    const soon = () => {
      if (!soonTimer) soonTimer = setTimeout(() => { soonTimer = null; refresh(); }, 1000);
    };
    plan();
    if (window.EventSource) {
      const source = new EventSource(ROOT + "/api/runs/events");
      const onRun = (event) => {
        const data = JSON.parse(event.data);
        if (data.run && data.run.schedule === name) soon();
      };
      for (const type of ["run:trigger", "run:start", "run:complete", "run:fail", "run:cancel", "run:retry", "run:release", "run:retry-scheduled", "run:waiting", "run:woken"]) {
        source.addEventListener(type, onRun);
      }
    }
  }

  renderTimes(document);
})();

// streamtask web console: a little JavaScript, no build step, no framework.
"use strict";

async function postJSON(url, body) {
  const response = await fetch(url, {
    method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify(body), credentials: "same-origin"});
  let data = {};
  try { data = await response.json(); } catch (e) { data = {error: response.statusText}; }
  return {status: response.status, data};
}

function show(box, text, failed) {
  box.hidden = false;
  box.textContent = text;
  box.classList.toggle("failed", Boolean(failed));
}

// -- pipeline: live dead-letter counts over server-sent events --------------------------

function markStage(diagram, name, dead) {
  const group = diagram.querySelector(`g.stage[data-stage="${CSS.escape(name)}"]`);
  if (!group) return;
  group.classList.toggle("dead", dead > 0);
  let badge = group.querySelector("text.count");
  if (dead > 0) {
    const box = group.querySelector("rect");
    if (!badge) {
      badge = document.createElementNS("http://www.w3.org/2000/svg", "text");
      badge.setAttribute("class", "count");
      badge.setAttribute("text-anchor", "end");
      badge.setAttribute("font-size", "11");
      group.appendChild(badge);
    }
    badge.setAttribute("x", Number(box.getAttribute("x")) + Number(box.getAttribute("width")) - 8);
    badge.setAttribute("y", Number(box.getAttribute("y")) + 18);
    badge.textContent = `${dead} dead`;
  } else if (badge) {
    badge.remove();
  }
}

const VERDICTS = ["healthy", "backlog-growing", "stuck", "no-workers"];

function showVerdict(diagram, name, status) {
  const verdict = status.verdict.replace(" ", "-");
  const group = diagram.querySelector(`g.stage[data-stage="${CSS.escape(name)}"]`);
  if (group) {
    group.classList.remove(...VERDICTS);
    group.classList.add(verdict);
    group.dataset.verdict = status.verdict;
    let title = group.querySelector("title.status");
    if (!title) {
      title = document.createElementNS("http://www.w3.org/2000/svg", "title");
      title.setAttribute("class", "status");
      group.appendChild(title);
    }
    title.textContent = `${status.verdict}: ${status.reason}`;
  }
  const row = document.querySelector(`#stages tr[data-stage="${CSS.escape(name)}"]`);
  if (!row) return;
  const label = row.querySelector(".verdict");
  label.className = `v verdict ${verdict}`;
  label.textContent = status.verdict;
  label.title = status.reason;
  row.querySelector(".lag").textContent = String(status.lag);
  row.querySelector(".retries").textContent = `${status.due} / ${status.waiting}`;
  row.querySelector(".workers").textContent = String(status.workers);
  row.querySelector(".rate").textContent = String(status.rate);
}

function livePipeline(diagram) {
  diagram.querySelectorAll("g.stage").forEach((group) => {
    group.addEventListener("click", () => { location.href = `/stages/${encodeURIComponent(group.dataset.stage)}`; });
  });
  const source = new EventSource(diagram.dataset.live);
  source.addEventListener("counts", (event) => {
    const counts = JSON.parse(event.data);
    for (const [name, count] of Object.entries(counts)) {
      const dead = count.dead || 0;
      markStage(diagram, name, dead);
      const cell = document.querySelector(`#stages tr[data-stage="${CSS.escape(name)}"] .dead-count`);
      if (cell) cell.textContent = count.dead === null ? "-" : String(count.dead);
    }
    diagram.dataset.updated = String(Date.now());
  });
  source.addEventListener("status", (event) => {
    for (const [name, status] of Object.entries(JSON.parse(event.data))) {
      showVerdict(diagram, name, status);
    }
    diagram.dataset.judged = String(Date.now());
  });
}

// -- dead letters: pick, confirm, replay, show the result -------------------------------

function replaySummary(job) {
  if (job.error) return `replay failed: ${job.error}`;
  const c = job.counts;
  let text = `replayed ${c.replayed}, skipped (filter) ${c.skipped}, parked ${c.parked}, undecodable ${c.undecodable}`;
  if (c.parked) text += `; parked on ${job.parked_topic}`;
  if (!c.replayed && !c.parked && !c.undecodable) text += " (already replayed by an earlier replay of the same dead letters)";
  return `${text}; progress in consumer group ${job.group}`;
}

async function followReplay(job, box) {
  while (!job.finished) {
    show(box, `replaying ${job.asked}: ${job.done}${job.total === null ? "" : " of " + job.total} read`);
    await new Promise((resolve) => setTimeout(resolve, 500));
    const response = await fetch(`/api/replays/${job.id}`, {credentials: "same-origin"});
    job = await response.json();
  }
  show(box, replaySummary(job), Boolean(job.error));
  box.dataset.finished = "true";
}

async function replay(request, question) {
  const box = document.getElementById("replay-result");
  if (!window.confirm(question)) return;
  const max = document.getElementById("replay-max");
  const rate = document.getElementById("replay-rate");
  request.max_replays = max ? Number(max.value) : 3;
  if (rate && rate.value) request.rate = Number(rate.value);
  delete box.dataset.finished;
  const {status, data} = await postJSON("/api/replays", request);
  if (status !== 202) { show(box, `not replayed: ${data.error}`, true); return; }
  await followReplay(data, box);
}

function deadLetters(panel) {
  const picks = () => Array.from(document.querySelectorAll("tr.letter"))
    .filter((row) => row.querySelector("input.pick")?.checked)
    .map((row) => [Number(row.dataset.partition), Number(row.dataset.offset)]);
  const stage = panel.dataset.stage;
  const one = document.getElementById("replay-one");
  if (one) {
    one.addEventListener("click", () => replay(
      {stage, positions: [[Number(panel.dataset.partition), Number(panel.dataset.offset)]]},
      `Replay this dead letter into stage ${stage}?`));
    return;
  }
  const pickedButton = document.getElementById("replay-picked");
  const refresh = () => { pickedButton.disabled = picks().length === 0; };
  document.querySelectorAll("input.pick").forEach((box) => box.addEventListener("change", refresh));
  document.getElementById("pick-all")?.addEventListener("change", (event) => {
    document.querySelectorAll("input.pick").forEach((box) => { box.checked = event.target.checked; });
    refresh();
  });
  pickedButton.addEventListener("click", () => {
    const positions = picks();
    replay({stage, positions}, `Replay the ${positions.length} picked dead letter(s) into stage ${stage}?`);
  });
  document.getElementById("replay-filter").addEventListener("click", () => {
    const d = panel.dataset;
    replay({stage, error_type: d.errorType, since: d.since, key: d.key},
           `Replay all ${d.matched} dead letter(s) matching these filters into stage ${stage}?`);
  });
}

// -- designer: check on every change, mark the stages, download or save -----------------

function markProblems(diagram, problems) {
  diagram.querySelectorAll("g.stage").forEach((group) => group.classList.remove("flagged", "warned"));
  for (const problem of problems) {
    for (const name of problem.stages) {
      const group = diagram.querySelector(`g.stage[data-stage="${CSS.escape(name)}"]`);
      group?.classList.add(problem.warning ? "warned" : "flagged");
      const title = document.createElementNS("http://www.w3.org/2000/svg", "title");
      title.textContent = problem.text;
      group?.appendChild(title);
    }
  }
}

function designer(editor) {
  const diagram = document.getElementById("design-diagram");
  const status = document.getElementById("check-status");
  const list = document.getElementById("problems");
  let timer = null;
  let sequence = 0;
  let highlight = () => {};
  const check = async () => {
    const mine = ++sequence;
    const response = await fetch("/api/designer/check", {method: "POST", body: editor.value,
      headers: {"Content-Type": "application/json"}, credentials: "same-origin"});
    const design = await response.json();
    if (mine !== sequence) return;  // a newer edit was checked meanwhile
    if (design.svg) diagram.innerHTML = design.svg;
    diagram.classList.toggle("stale", !design.svg);
    markProblems(diagram, design.problems);
    highlight();
    list.replaceChildren(...design.problems.map((problem) => {
      const item = document.createElement("li");
      item.className = problem.warning ? "warning" : "problem";
      item.textContent = problem.text;
      return item;
    }));
    status.textContent = design.ok ? "check passed" : "problems found";
    status.className = `status ${design.ok ? "ok" : "bad"}`;
    status.dataset.checked = String(mine);
  };
  editor.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(check, 250); });
  check();  // marks the problems of the definition the page opened with
  highlight = taskPanel(editor, () => { clearTimeout(timer); check(); });
  document.getElementById("download").addEventListener("click", () => {
    const link = document.createElement("a");
    link.href = URL.createObjectURL(new Blob([editor.value], {type: "application/json"}));
    link.download = document.getElementById("save-name")?.value || "workflow.json";
    link.click();
  });
  document.getElementById("save")?.addEventListener("click", () => save(editor));
}

// -- designer: direct manipulation of SIMPLE tasks (the JSON stays the source of truth) ----

const RETRY_FIELDS = ["retryCount", "retryLogic", "retryDelaySeconds", "timeoutSeconds"];

function taskLists(tasks, found = []) {
  // Every task list of a definition: the top level, fork branches, switch cases.
  if (!Array.isArray(tasks)) return found;
  found.push(tasks);
  for (const task of tasks) {
    if (!task || typeof task !== "object") continue;
    for (const branch of Array.isArray(task.forkTasks) ? task.forkTasks : []) taskLists(branch, found);
    const cases = task.decisionCases && typeof task.decisionCases === "object" ? Object.values(task.decisionCases) : [];
    for (const list of cases) taskLists(list, found);
    taskLists(task.defaultCase, found);
  }
  return found;
}

function locate(definition, name) {
  // The list holding the SIMPLE task called `name`, and its index there.
  for (const list of taskLists(definition.tasks)) {
    const index = list.findIndex((task) => task && task.name === name && (task.type || "SIMPLE") === "SIMPLE");
    if (index >= 0) return {list, index};
  }
  return null;
}

function taskPanel(editor, rerun) {
  const panel = document.getElementById("task-panel");
  const problem = document.getElementById("task-problem");
  let selected = null;
  const parsed = () => { try { return JSON.parse(editor.value); } catch (e) { return null; } };
  const write = (definition, name) => {
    editor.value = JSON.stringify(definition, null, 2);
    selected = name;
    rerun();
  };
  const open = (name) => {
    const definition = parsed();
    const where = definition && locate(definition, name);
    if (!where) return;
    selected = name;
    const task = where.list[where.index];
    document.getElementById("task-title").textContent = name;
    panel.elements.name.value = name;
    for (const field of RETRY_FIELDS) panel.elements[field].value = task[field] ?? "";
    problem.hidden = true;
    panel.hidden = false;
    highlight();
  };
  const highlight = () => document.querySelectorAll("#design-diagram g.stage").forEach(
    (group) => group.classList.toggle("selected", group.dataset.stage === selected));
  const change = (how) => {
    const definition = parsed();
    const where = definition && locate(definition, selected);
    if (!where) { problem.textContent = "the JSON does not parse or no longer has this task: fix it first"; problem.hidden = false; return; }
    write(definition, how(where.list, where.index));
  };
  panel.addEventListener("submit", (event) => {
    event.preventDefault();
    change((list, index) => {
      const task = list[index];
      task.name = panel.elements.name.value;
      for (const field of RETRY_FIELDS) {
        const value = panel.elements[field].value;
        if (value === "") delete task[field];
        else task[field] = field === "retryLogic" ? value : Number(value);
      }
      document.getElementById("task-title").textContent = task.name;
      return task.name;
    });
  });
  document.getElementById("task-add").addEventListener("click", () => change((list, index) => {
    let number = 1;
    while (editor.value.includes(`"new_task_${number}"`)) number += 1;
    const name = `new_task_${number}`;
    list.splice(index + 1, 0, {name, taskReferenceName: `${name}_ref`, type: "SIMPLE"});
    setTimeout(() => open(name), 0);
    return name;
  }));
  document.getElementById("task-remove").addEventListener("click", () => change((list, index) => {
    list.splice(index, 1);
    panel.hidden = true;
    return null;
  }));
  document.getElementById("design-diagram").addEventListener("click", (event) => {
    const group = event.target.closest("g.stage");
    if (group) open(group.dataset.stage);
  });
  return highlight;
}

async function save(editor) {
  const box = document.getElementById("save-result");
  const name = document.getElementById("save-name").value;
  let {status, data} = await postJSON("/api/designer/save", {name, definition: editor.value});
  if (status === 409 && window.confirm(`${name} exists. Replace it?`)) {
    ({status, data} = await postJSON("/api/designer/save", {name, definition: editor.value, overwrite: true}));
  }
  if (status === 200) show(box, `saved ${data.saved}${data.ok ? "" : " (it still has problems)"}`);
  else show(box, `not saved: ${data.error}`, true);
}

document.addEventListener("DOMContentLoaded", () => {
  const diagram = document.getElementById("pipeline-diagram");
  if (diagram) livePipeline(diagram);
  const panel = document.getElementById("replay-box");
  if (panel) deadLetters(panel);
  const editor = document.getElementById("definition");
  if (editor) designer(editor);
});

// tumord's page: refresh the live part, and send dropped scans to the input folder.
"use strict";

const live = document.getElementById("live");
const result = document.getElementById("drop-result");
const zone = document.getElementById("dropzone");
const picker = document.getElementById("file");

async function refresh() {
  try {
    const response = await fetch("/?live=1", { cache: "no-store" });
    if (!response.ok) return;
    const html = await response.text();
    const open = [...live.querySelectorAll("details[open]")].map((d) => d.dataset.id);
    live.innerHTML = html;
    for (const d of live.querySelectorAll("details")) {
      if (open.includes(d.dataset.id)) d.open = true;
    }
    const status = await fetch("/readyz", { cache: "no-store" });
    const bar = document.getElementById("status");
    bar.textContent = await status.text();
    bar.className = status.ok ? "ok" : "bad";
  } catch (e) {
    // the service is restarting or gone: keep what is shown, try again
  }
}

function show(text, cls) {
  result.textContent = text;
  result.className = cls || "";
}

async function waitForVerdict(file) {
  for (let i = 0; i < 600; i++) {
    const response = await fetch("/api/verdicts?limit=200", { cache: "no-store" });
    if (response.ok) {
      const found = (await response.json()).find((v) => v.file === file);
      if (found) return found;
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  return null;
}

function size(bytes) {
  return bytes >= 2 ** 20 ? `${(bytes / 2 ** 20).toFixed(1)} MiB` : `${(bytes / 1024).toFixed(1)} KiB`;
}

async function upload(file) {
  const limit = Number(picker.dataset.maxBytes);
  if (limit && file.size > limit) {  // refused before sending: the server would cut the connection
    show(`${file.name} was refused: it is ${size(file.size)}; the limit is ${size(limit)} (watch.max_bytes)`, "bad");
    return;
  }
  show(`Sending ${file.name} …`);
  let response;
  try {
    response = await fetch(`/api/upload?name=${encodeURIComponent(file.name)}`, {
      method: "POST", headers: { "Content-Type": "application/octet-stream" }, body: file,
    });
  } catch (e) {
    show(`${file.name} was not sent: ${e.message}`, "bad");
    return;
  }
  const body = await response.text();
  let answer;
  try {
    answer = JSON.parse(body);
  } catch (e) {
    answer = { error: body.trim() };
  }
  if (!response.ok) {
    show(`${file.name} was refused: ${answer.error}`, "bad");
    return;
  }
  show(`${answer.file} is in the input folder; waiting for its verdict …`);
  const verdict = await waitForVerdict(answer.file);
  if (verdict === null) {
    show(`${answer.file}: no verdict yet; it will appear in the table below.`);
  } else if (verdict.outcome === "failed") {
    show(`${answer.file} failed: ${verdict.error}`, "bad");
  } else {
    if (verdict.abstained) {
      show(`${answer.file}: the model abstained (${verdict.abstain_reasons.join("; ")}); it would say ` +
           `${verdict.label}, confidence ${verdict.confidence.toFixed(3)}, model ${verdict.model}`, "bad");
    } else {
      show(`${answer.file}: ${verdict.label} (confidence ${verdict.confidence.toFixed(3)}, model ${verdict.model})`, "ok");
    }
    if (verdict.heatmap) {
      const img = document.createElement("img");
      img.alt = `heat map of ${answer.file}`;
      img.src = `/api/verdicts/${encodeURIComponent(verdict.id)}/heatmap.png`;
      result.appendChild(img);
    }
  }
  refresh();
}

zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
zone.addEventListener("dragleave", () => zone.classList.remove("over"));
zone.addEventListener("drop", (e) => {
  e.preventDefault();
  zone.classList.remove("over");
  for (const file of e.dataTransfer.files) upload(file);
});
picker.addEventListener("change", () => {
  for (const file of picker.files) upload(file);
  picker.value = "";
});
setInterval(refresh, 2000);

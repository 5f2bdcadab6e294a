"""The page served at `/`: drop or choose a photo, see the top-3 classes, the model's 28x28
input, the autoencoder's reconstruction and the unknown flag; an unknown input is shown as such
first ("this does not look like a garment"), its classes greyed. When the service has a catalogue
index, the most similar catalogue items follow as thumbnails (none for an unknown input, which
says why). Plain HTML and JS, no build step."""

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>deepautodnn</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font-family:system-ui,sans-serif;max-width:760px;margin:2em auto;padding:0 1em;color:#222}
#drop{border:2px dashed #999;border-radius:8px;padding:2em;text-align:center;cursor:pointer}
#drop.over{background:#eef}
.bar{background:#4a7;height:1.1em;border-radius:3px}
table{border-collapse:collapse;width:100%}td{padding:.25em .4em}
.pix{width:112px;height:112px;image-rendering:pixelated;border:1px solid #ccc;background:#000}
#unknown{font-weight:bold}.warn{color:#b30}.error{color:#b00}.muted{opacity:.45}
#neighbours{display:flex;flex-wrap:wrap;gap:.6em}#neighbours figure{margin:0;width:104px;font-size:.8em}
#neighbours img{width:96px;height:96px;object-fit:contain;border:1px solid #ccc;background:#fff}
</style></head><body>
<h1>deepautodnn</h1>
<p id="model">loading model information...</p>
<div id="drop">Drop a photo here, or <label>choose one <input id="file" type="file" accept="image/*"></label></div>
<p><label>Bearer token (if the server asks for one): <input id="token" type="password" size="24"></label></p>
<div id="result" hidden>
  <h2 id="result-label"></h2>
  <p id="unknown"></p>
  <table id="bars"></table>
  <p><img id="input" class="pix" alt="the model's 28x28 input">
     <img id="recon" class="pix" alt="the autoencoder's reconstruction"><br>
     <small>left: what the model sees (28x28); right: the autoencoder's reconstruction</small></p>
  <div id="similar" hidden><h3>Similar items in the catalogue</h3><p id="similar-note" class="warn"></p>
    <div id="neighbours"></div></div>
</div>
<p id="error" class="error"></p>
<script>
const $ = (id) => document.getElementById(id);
function headers() {
  const t = $("token").value.trim();
  return t ? {"Authorization": "Bearer " + t} : {};
}
let hasIndex = false;
async function loadModel() {
  const r = await fetch("/v1/model", {headers: headers()});
  const body = await r.json();
  hasIndex = r.ok && !!body.similar;
  $("model").textContent = r.ok
    ? "Classes: " + body.classes.join(", ") + " (" + body.backend + " backend)" +
      (hasIndex ? "; similar items from " + body.similar.items + " catalogue images" : "")
    : "Model: " + body.detail;
}
async function showSimilar(file) {
  $("similar").hidden = true;
  if (!hasIndex) return;
  const form = new FormData();
  form.append("files", file, file.name);
  const r = await fetch("/v1/similar?k=8&thumbnails=true", {method: "POST", body: form, headers: headers()});
  const body = await r.json();
  if (!r.ok) { $("error").textContent = "Similar items: error " + r.status + ": " + body.detail; return; }
  const result = body.results[0];
  $("similar-note").textContent = result.note ? "No similar items: " + result.note + "." : "";
  $("neighbours").innerHTML = "";
  for (const n of result.neighbours) {
    const fig = document.createElement("figure");
    const img = document.createElement("img");
    img.alt = n.label + ", similarity " + n.score.toFixed(2);
    img.title = n.file;
    if (n.thumbnail_jpeg) img.src = "data:image/jpeg;base64," + n.thumbnail_jpeg;
    const caption = document.createElement("figcaption");
    caption.textContent = n.label + " " + n.score.toFixed(2);
    fig.append(img, caption);
    $("neighbours").appendChild(fig);
  }
  $("similar").hidden = false;
}
async function classify(file) {
  $("error").textContent = "";
  const form = new FormData();
  form.append("files", file, file.name);
  const r = await fetch("/v1/predict?details=true&top_k=3", {method: "POST", body: form, headers: headers()});
  const body = await r.json();
  if (!r.ok) { $("result").hidden = true; $("error").textContent = "Error " + r.status + ": " + body.detail; return; }
  const p = body.predictions[0];
  // An unknown input leads with the verdict, not with a confident-looking label.
  $("result-label").textContent = p.unknown ? "This does not look like a garment" : p.label;
  $("result-label").className = p.unknown ? "warn" : "";
  $("unknown").textContent = p.unknown === null ? "" :
    (p.unknown ? "Unknown input (score " + p.unknown_score.toFixed(2) + ", above 1 is unknown). " +
                 "If it were a garment, the closest class would be " + p.label + ":"
               : "Looks like the training images (unknown score " + p.unknown_score.toFixed(2) + ")");
  $("unknown").className = p.unknown ? "warn" : "";
  $("bars").className = p.unknown ? "muted" : "";
  $("bars").innerHTML = "";
  for (const t of p.top_k) {
    const row = $("bars").insertRow();
    row.insertCell().textContent = t.label;
    const bar = document.createElement("div");
    bar.className = "bar"; bar.style.width = (100 * t.probability).toFixed(1) + "%";
    row.insertCell().appendChild(bar);
    row.insertCell().textContent = (100 * t.probability).toFixed(1) + "%";
  }
  $("input").src = "data:image/png;base64," + p.input_png;
  $("recon").src = "data:image/png;base64," + p.reconstruction_png;
  $("result").hidden = false;
  await showSimilar(file);
}
$("file").addEventListener("change", (e) => { if (e.target.files[0]) classify(e.target.files[0]); });
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault(); drop.classList.remove("over");
  if (e.dataTransfer.files[0]) classify(e.dataTransfer.files[0]);
});
loadModel();
</script></body></html>
"""

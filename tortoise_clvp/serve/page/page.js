// The page's behaviour: list voices, upload clips as a new voice, and speak with streamed 16-bit PCM played as it
// arrives (Web Audio), then kept in the <audio> player as a WAV for replaying and saving. No build step.
"use strict";

const SAMPLE_RATE_HEADER = "X-Sample-Rate";
const $ = (id) => document.getElementById(id);

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    return body.error ? body.error.message : JSON.stringify(body);
  } catch (e) {
    return `${response.status} ${response.statusText}`;
  }
}

async function loadVoices(select) {
  const response = await fetch("/v1/audio/voices");
  if (!response.ok) throw new Error(await errorMessage(response));
  const { voices } = await response.json();
  const picker = $("voice");
  picker.replaceChildren(...voices.map((v) => new Option(`${v.name} (${v.source})`, v.id)));
  if (select) picker.value = select;
  document.body.dataset.voices = String(voices.length);
}

async function upload() {
  const files = $("clips").files;
  if (!files.length) return setStatus("Choose one or more audio clips first.", true);
  const form = new FormData();
  for (const file of files) form.append("files", file);
  const name = $("voice-name").value.trim();
  if (name) form.append("name", name);
  setStatus("Uploading and analysing the clips…");
  const response = await fetch("/v1/audio/voices", { method: "POST", body: form });
  if (!response.ok) return setStatus(await errorMessage(response), true);
  const voice = await response.json();
  await loadVoices(voice.id);
  setStatus(`Voice ${voice.name} is ready.`);
}

function wavBlob(samples, rate) {
  // 16-bit mono WAV of Int16 samples
  const header = new DataView(new ArrayBuffer(44));
  const text = (offset, s) => [...s].forEach((c, i) => header.setUint8(offset + i, c.charCodeAt(0)));
  text(0, "RIFF"); header.setUint32(4, 36 + samples.byteLength, true); text(8, "WAVEfmt ");
  header.setUint32(16, 16, true); header.setUint16(20, 1, true); header.setUint16(22, 1, true);
  header.setUint32(24, rate, true); header.setUint32(28, rate * 2, true); header.setUint16(32, 2, true);
  header.setUint16(34, 16, true); text(36, "data"); header.setUint32(40, samples.byteLength, true);
  return new Blob([header, samples], { type: "audio/wav" });
}

async function speak() {
  const body = { model: $("model").value, input: $("text").value, voice: $("voice").value,
                 response_format: "pcm", stream: true };
  if ($("seed").value !== "") body.seed = Number($("seed").value);
  document.body.dataset.state = "speaking";
  setStatus("Speaking…");
  const response = await fetch("/v1/audio/speech", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  if (!response.ok) {
    document.body.dataset.state = "error";
    return setStatus(await errorMessage(response), true);
  }
  const rate = Number(response.headers.get(SAMPLE_RATE_HEADER) || 24000);
  const context = new (window.AudioContext || window.webkitAudioContext)({ sampleRate: rate });
  let playAt = context.currentTime + 0.1, leftover = new Uint8Array(0), received = 0, chunks = 0;
  const parts = [];
  const reader = response.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    const bytes = new Uint8Array(leftover.length + value.length);
    bytes.set(leftover); bytes.set(value, leftover.length);
    const whole = bytes.length - (bytes.length % 2);
    leftover = bytes.slice(whole);
    const pcm = new Int16Array(bytes.buffer.slice(0, whole));
    if (!pcm.length) continue;
    parts.push(pcm); received += whole; chunks += 1;
    const buffer = context.createBuffer(1, pcm.length, rate);
    const channel = buffer.getChannelData(0);
    for (let i = 0; i < pcm.length; i++) channel[i] = pcm[i] / 32768;
    const source = context.createBufferSource();
    source.buffer = buffer; source.connect(context.destination);
    playAt = Math.max(playAt, context.currentTime);
    source.start(playAt); playAt += buffer.duration;
    setStatus(`Playing… ${(received / 2 / rate).toFixed(1)} s received`);
  }
  const all = new Int16Array(received / 2);
  let offset = 0;
  for (const part of parts) { all.set(part, offset); offset += part.length; }
  $("player").src = URL.createObjectURL(wavBlob(all, rate));
  document.body.dataset.received = String(received);
  document.body.dataset.state = "done";
  setStatus(`Done: ${(all.length / rate).toFixed(2)} s of audio in ${chunks} piece(s), seed ${response.headers.get("X-Seed")}.`);
}

function guarded(action) {
  return () => action().catch((error) => {
    document.body.dataset.state = "error";
    setStatus(String(error), true);
  });
}

$("speak").addEventListener("click", guarded(speak));
$("upload").addEventListener("click", guarded(upload));
guarded(() => loadVoices())();

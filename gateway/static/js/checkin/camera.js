/* onsale: the door's camera and QR decoder: the back camera
 * (getUserMedia, facingMode environment) in a <video>, a frame every ~150 ms drawn
 * onto a canvas and decoded with the browser's BarcodeDetector where it has one,
 * else with the vendored jsQR (a classic script, window.jsQR). A code still in
 * view is decoded frame after frame: the same code again within 3 s of its last
 * sighting is ignored. */

const FRAME_MS = 150;
const SAME_CODE_MS = 3000;
const MAX_SIDE = 720; // frames are scaled down to this: enough for a phone-screen QR

async function makeDecoder() {
  if ('BarcodeDetector' in window) {
    try {
      const formats = await window.BarcodeDetector.getSupportedFormats();
      if (formats.includes('qr_code')) {
        const detector = new window.BarcodeDetector({ formats: ['qr_code'] });
        return { name: 'BarcodeDetector', decode: async (canvas) => {
          const found = await detector.detect(canvas);
          return found.length ? found[0].rawValue : null;
        } };
      }
    } catch (_) {
      /* no usable detector: jsQR below */
    }
  }
  if (typeof window.jsQR === 'function') {
    return { name: 'jsQR', decode: async (canvas, ctx) => {
      const img = ctx.getImageData(0, 0, canvas.width, canvas.height);
      const found = window.jsQR(img.data, img.width, img.height, { inversionAttempts: 'dontInvert' });
      return found && found.data ? found.data : null;
    } };
  }
  return null;
}

/**
 * The scanner: `onCode(text)` for each new code seen; `onState(state, text)` with
 * state starting, running, stopped or error.
 */
export function camera({ video, canvas, onCode, onState }) {
  let stream = null;
  let timer = null;
  let decoder = null;
  let last = { text: '', at: 0 };
  let generation = 0;
  const ctx = canvas.getContext('2d', { willReadFrequently: true });

  async function start() {
    const mine = ++generation;
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      onState('error', 'This browser cannot use a camera here (it needs a secure https page). Type or paste the codes instead.');
      return;
    }
    onState('starting', 'Starting the camera…');
    decoder = decoder || (await makeDecoder());
    if (!decoder) {
      onState('error', 'No QR decoder is available in this browser. Type or paste the codes instead.');
      return;
    }
    try {
      const s = await navigator.mediaDevices.getUserMedia({ video: { facingMode: 'environment' }, audio: false });
      if (mine !== generation) {
        s.getTracks().forEach((t) => t.stop());
        return;
      }
      stream = s;
      video.srcObject = s;
      video.setAttribute('playsinline', '');
      video.muted = true;
      await video.play().catch(() => {});
    } catch (e) {
      const denied = e && (e.name === 'NotAllowedError' || e.name === 'SecurityError');
      onState('error', denied
        ? 'The camera was not allowed. Allow it in the browser’s settings, or type or paste the codes instead.'
        : `The camera could not start (${(e && e.name) || 'error'}). Type or paste the codes instead.`);
      return;
    }
    onState('running', `Camera on: hold a ticket’s QR code in front of it (${decoder.name}).`);
    loop(mine);
  }

  function loop(mine) {
    timer = setTimeout(async () => {
      if (mine !== generation) return;
      if (!document.hidden && video.readyState >= 2 && video.videoWidth) {
        const scale = Math.min(1, MAX_SIDE / Math.max(video.videoWidth, video.videoHeight));
        const w = Math.round(video.videoWidth * scale);
        const h = Math.round(video.videoHeight * scale);
        if (canvas.width !== w) canvas.width = w;
        if (canvas.height !== h) canvas.height = h;
        ctx.drawImage(video, 0, 0, w, h);
        let text = null;
        try {
          text = await decoder.decode(canvas, ctx);
        } catch (_) {
          text = null;
        }
        if (mine !== generation) return;
        if (text) seen(text);
      }
      loop(mine);
    }, FRAME_MS);
  }

  function seen(text) {
    const t = Date.now();
    const repeat = text === last.text && t - last.at < SAME_CODE_MS;
    last = { text, at: t };
    if (!repeat) onCode(text);
  }

  function stop() {
    generation++;
    clearTimeout(timer);
    timer = null;
    if (stream) stream.getTracks().forEach((t) => t.stop());
    stream = null;
    video.srcObject = null;
    onState('stopped', 'Camera off.');
  }

  return { start, stop, running: () => !!stream };
}

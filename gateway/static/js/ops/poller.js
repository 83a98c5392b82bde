/* onsale: a poller for the operators' dashboard: runs `fn` again after the delay it
 * answers (ms), or stops when it answers null; `kick()` runs it now (or right after
 * the run in progress). */

export function poller(fn) {
  let timer = null;
  let running = false;
  let stopped = true;
  let again = false;
  const p = {
    start() {
      stopped = false;
      p.kick();
    },
    stop() {
      stopped = true;
      clearTimeout(timer);
      timer = null;
    },
    kick() {
      if (stopped) return;
      if (running) {
        again = true;
        return;
      }
      clearTimeout(timer);
      timer = null;
      run();
    },
  };
  async function run() {
    running = true;
    let next;
    try {
      next = await fn();
    } catch (e) {
      console.error(e);
      next = 5000;
    }
    running = false;
    if (stopped) return;
    if (again) {
      again = false;
      next = 0;
    }
    if (next == null) {
      p.stop();
      return;
    }
    timer = setTimeout(run, next);
  }
  return p;
}

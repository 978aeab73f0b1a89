/*
 * The portal's lease countdown: the paragraph `.lease[data-seconds-left]` that the portal puts
 * below a task counts down the time the image stays held for the worker, and turns into a warning
 * (class `warning`) in its last WARN_SECONDS, so an answer is not lost to an expired lease.
 */
(() => {
  "use strict";
  const WARN_SECONDS = 60;
  const note = document.querySelector(".lease[data-seconds-left]");
  if (!note) return;
  const deadline = Date.now() + Number(note.dataset.secondsLeft) * 1000;
  const clock = (seconds) => `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, "0")}`;
  const tick = () => {
    const left = Math.max(0, Math.round((deadline - Date.now()) / 1000));
    if (left === 0) {
      note.textContent = "Time is up: this image went back to the pool. Reload the page for the next one.";
      note.classList.add("warning");
      clearInterval(timer);
    } else if (left <= WARN_SECONDS) {
      note.textContent = `Only ${clock(left)} left on this image: submit now, or it goes back to the pool.`;
      note.classList.add("warning");
    } else {
      note.textContent = `Time left on this image: ${clock(left)}.`;
    }
  };
  const timer = setInterval(tick, 1000);
  tick();
})();

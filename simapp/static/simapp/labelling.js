// The labelling page's keyboard: a key clicks the button whose data-shortcut is that key (1/0, 1-5, s, u),
// "?" opens the help dialog. Keys typed into a field are left alone. No build step, no dependencies.
(() => {
  const help = () => document.getElementById("labelling-help");
  const typing = (element) =>
    element instanceof HTMLElement && (element.isContentEditable || element.closest("input, textarea, select"));

  document.addEventListener("keydown", (event) => {
    if (event.defaultPrevented || event.repeat || event.ctrlKey || event.metaKey || event.altKey) return;
    const root = document.querySelector("[data-labelling]");
    if (!root || typing(event.target) || help()?.open) return; // the open dialog has its own keys (Esc)
    if (event.key === "?") {
      event.preventDefault();
      help()?.showModal();
      return;
    }
    if (root.querySelector(".htmx-request")) return; // an answer is on its way: no second one blind
    const button = root.querySelector(`button[data-shortcut="${CSS.escape(event.key.toLowerCase())}"]`);
    if (button && !button.disabled) {
      event.preventDefault();
      // htmx wires up swapped-in content when it settles, ~20 ms after the swap; a key pressed sooner
      // would submit the form the plain way. Wire it up now (nothing to do when it already is).
      window.htmx?.process(button.closest("form") ?? button);
      button.click();
    }
  });

  document.addEventListener("click", (event) => {
    if (event.target instanceof Element && event.target.closest("[data-help-open]")) help()?.showModal();
  });

  // A refused answer (400) carries its reason and the next pair for the same place; htmx swaps only 2xx
  // answers unless told.
  document.addEventListener("htmx:beforeSwap", (event) => {
    if (event.detail.xhr.status === 400 && event.detail.target?.id === "labelling-work") {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });
})();

// Keeps paired inputs in step: an input with data-mirror="ID" copies its value to the element with that id
// as it changes (the anomaly threshold's slider and its number box). No build step, no dependencies.
document.addEventListener("input", (event) => {
  const source = event.target;
  const id = source instanceof HTMLInputElement ? source.dataset.mirror : undefined;
  const other = id ? document.getElementById(id) : null;
  if (other instanceof HTMLInputElement) other.value = source.value;
});

// Live regions: an element with data-live="URL" takes the HTML of each "update" event of the
// event stream at URL; an "end" event closes the stream (the job has nothing more to show).
"use strict";
document.querySelectorAll("[data-live]").forEach(function (el) {
  var source = new EventSource(el.getAttribute("data-live"));
  source.addEventListener("update", function (e) {
    el.innerHTML = e.data;
    el.setAttribute("data-updated", String(Date.now()));
  });
  source.addEventListener("end", function () {
    source.close();
    el.setAttribute("data-ended", "true");
  });
});

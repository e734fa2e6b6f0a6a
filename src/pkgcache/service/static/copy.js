// Shows the copy buttons (hidden without JavaScript) and copies a block's text. The clipboard API needs a secure
// context, which plain http on a LAN address is not, hence the selection fallback. Inlined under the CSP nonce.
document.querySelectorAll("button.copy").forEach(function (button) {
  button.hidden = false;
  button.addEventListener("click", function () {
    var code = button.closest(".snippet").querySelector("pre code");
    var label = button.textContent;
    function done() { button.textContent = button.dataset.copied;
      setTimeout(function () { button.textContent = label; }, 1500); }
    function fallback() { var range = document.createRange(); range.selectNodeContents(code);
      var selection = window.getSelection(); selection.removeAllRanges(); selection.addRange(range);
      try { document.execCommand("copy"); done(); } catch (e) {} }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(code.textContent).then(done, fallback);
    } else { fallback(); }
  });
});

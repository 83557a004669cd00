#!/usr/bin/env bash
# The demo page's third-party code, copied here so the page needs no build and no CDN (it calls nowhere).
# Each file keeps its license header. Bump a version below, run this, and commit what changed.
#   marked (MIT): markdown to HTML       DOMPurify (Apache-2.0 or MPL-2.0): model output is untrusted
#   highlight.js (BSD-3-Clause): code blocks, a few common languages (their
#   colours are in ../chat-ui/chat.css, which the React examples share)
set -euo pipefail
MARKED=18.2.1 DOMPURIFY=3.4.18 HLJS=11.12.0
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
npm pack --silent "marked@$MARKED" "dompurify@$DOMPURIFY" "@highlightjs/cdn-assets@$HLJS" >/dev/null
for archive in *.tgz; do mkdir "${archive%.tgz}" && tar xzf "$archive" -C "${archive%.tgz}"; done
cp "marked-$MARKED/package/lib/marked.esm.js" "$here/"
cp "dompurify-$DOMPURIFY/package/dist/purify.es.mjs" "$here/"
hljs="highlightjs-cdn-assets-$HLJS/package"
mkdir -p "$here/highlight/languages"
cp "$hljs/es/core.min.js" "$here/highlight/"
for language in python javascript typescript json bash css xml sql yaml; do
  cp "$hljs/es/languages/$language.min.js" "$here/highlight/languages/"
done

import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

// chatstream.js is the one the Flask blueprint serves (its table of error words); in your own app,
// copy it (and chatstream.d.ts) into src/ instead of aliasing.
const chatstream = fileURLToPath(new URL("../../flask_chatstream/static/chatstream.js", import.meta.url));

export default defineConfig({
  base: "/ai-sdk/", // example_app.py serves the build at /ai-sdk/
  resolve: { alias: { chatstream } },
  esbuild: { jsx: "automatic" },
  server: { proxy: { "/api": "http://127.0.0.1:8000" } }, // `npm run dev` beside `make demo`
  test: { environment: "node", include: ["src/**/*.test.ts"], testTimeout: 30000 },
});

import { defineConfig } from "vite";

export default defineConfig({
  base: "/ag-ui/", // example_app.py serves the build at /ag-ui/
  esbuild: { jsx: "automatic" },
  server: { proxy: { "/api": "http://127.0.0.1:8000" } }, // `npm run dev` beside `make demo`
});

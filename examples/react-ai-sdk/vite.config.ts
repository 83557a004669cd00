import { defineConfig } from "vite";

export default defineConfig({
  base: "/ai-sdk/", // example_app.py serves the build at /ai-sdk/
  esbuild: { jsx: "automatic" },
  server: { proxy: { "/api": "http://127.0.0.1:8000" } }, // `npm run dev` beside `make demo`
  test: { environment: "node", include: ["src/**/*.test.ts"], testTimeout: 30000 },
});

import { fileURLToPath } from 'node:url'
import vue from '@vitejs/plugin-vue'
import { defineConfig } from 'vite'

// The build lands inside the Python package so `make run` needs no Node.
// STARCHART_WEB_OUT lets the build check write a second copy elsewhere.
const outDir =
  process.env.STARCHART_WEB_OUT ??
  fileURLToPath(new URL('../src/starchart/web/dist', import.meta.url))

export default defineConfig({
  plugins: [vue()],
  build: {
    outDir,
    emptyOutDir: true,
    // No source maps and no inlined assets: the output must be byte-identical
    // for identical sources (CI compares it with the committed build).
    sourcemap: false,
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
  },
  server: {
    proxy: { '/v1': 'http://127.0.0.1:8000', '/ready': 'http://127.0.0.1:8000' },
  },
})

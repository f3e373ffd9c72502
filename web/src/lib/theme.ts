// Light and dark: follow the system until the user picks one, then remember it.
import { ref, watchEffect } from 'vue'
import { load, save } from './persist'

type Theme = 'light' | 'dark'
const system: Theme = matchMedia('(prefers-color-scheme: dark)').matches ? 'dark' : 'light'
export const theme = ref<Theme>(load<Theme | null>('starchart.theme', null) ?? system)

watchEffect(() => {
  document.documentElement.dataset.theme = theme.value
})

export function toggleTheme(): void {
  theme.value = theme.value === 'dark' ? 'light' : 'dark'
  save('starchart.theme', theme.value)
}

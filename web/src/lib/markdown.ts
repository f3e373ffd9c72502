// Model output -> safe HTML. Three layers: markdown-it escapes raw HTML and has
// images switched off, DOMPurify strips anything active that is left, and the
// server's Content-Security-Policy forbids inline script and remote loads.
import DOMPurify from 'dompurify'
import hljs from 'highlight.js/lib/common'
import MarkdownIt from 'markdown-it'

const md: InstanceType<typeof MarkdownIt> = new MarkdownIt({
  html: false,
  linkify: true,
  breaks: true,
  highlight(code: string, lang: string): string {
    const language = lang && hljs.getLanguage(lang) ? lang : ''
    const body = language
      ? hljs.highlight(code, { language, ignoreIllegals: true }).value
      : md.utils.escapeHtml(code)
    const label = md.utils.escapeHtml(language || lang || 'text')
    return (
      `<pre class="code-block"><div class="code-head"><span>${label}</span>` +
      `<button type="button" class="copy-code" aria-label="Copy code">Copy</button></div>` +
      `<code class="hljs">${body}</code></pre>`
    )
  },
})
// An image in an answer would make the browser fetch whatever URL the model wrote.
md.disable('image')

DOMPurify.addHook('afterSanitizeAttributes', (node) => {
  if (node.tagName === 'A') {
    node.setAttribute('target', '_blank')
    node.setAttribute('rel', 'noopener noreferrer nofollow')
  }
})

const PURIFY = {
  FORBID_TAGS: ['img', 'image', 'svg', 'math', 'style', 'link', 'iframe', 'frame', 'object',
    'embed', 'video', 'audio', 'source', 'picture', 'form', 'input', 'textarea', 'select',
    'base', 'meta'],
  FORBID_ATTR: ['style', 'srcset', 'src', 'action', 'formaction', 'background', 'poster'],
  ALLOWED_URI_REGEXP: /^(?:https?:|mailto:|#)/i,
}

export function renderMarkdown(text: string): string {
  return DOMPurify.sanitize(md.render(text), PURIFY) as string
}

// Error text (the server's, or the page's own) is read, not followed: its commands in
// backticks become code and nothing else is markdown. So a URL in it is no link (a
// link cut at the colon of http://user:***@host led to http://user) and the *** of
// two masked URLs do not turn the text between them into emphasis.
const errorMd: InstanceType<typeof MarkdownIt> = new MarkdownIt('zero', { breaks: true })
  .enable(['backticks', 'newline'])

export function renderError(text: string): string {
  return DOMPurify.sanitize(errorMd.render(text), PURIFY) as string
}

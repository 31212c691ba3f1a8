// The VM console page: noVNC speaking RFB over the portal's websocket proxy
// (GET /api/v1/vms/{id}/console, signed-in owner or admin only).
import RFB from '/novnc/core/rfb.js';

const screen = document.getElementById('console-screen');
const status = document.getElementById('console-status');
const vm = screen.dataset.vm;
const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
const rfb = new RFB(screen, `${scheme}://${location.host}/api/v1/vms/${vm}/console`, {
  wsProtocols: ['binary'],
});
rfb.scaleViewport = true;
rfb.focusOnClick = true;
rfb.addEventListener('connect', () => {
  status.textContent = 'Connected.';
  screen.dataset.connected = 'true';
});
rfb.addEventListener('disconnect', (event) => {
  status.textContent = event.detail.clean
    ? 'Disconnected.'
    : 'The console closed: the VM is not running, or you may not open it.';
  screen.dataset.connected = 'false';
});
rfb.addEventListener('desktopname', (event) => {
  status.textContent = `Connected to ${event.detail.name}.`;
});

// The ferry_native addon's TypeScript face, by role: loader.ts (loading the .node and the one
// declaration of what it exports), file-ops.ts (file and block-device operations), control.ts
// (the capture driver's control device) and ferry-abi.ts (the change-record format, pure code).
// On Windows the same names come from native/addon/win; see native/windows/README.md.

export * from './loader';
export * from './file-ops';
export * from './control';
export * from './ferry-abi';

import { Language, Node as SyntaxNode, Parser } from 'web-tree-sitter';

/** Syntax errors (ERROR and MISSING nodes) the tree-sitter PowerShell grammar finds in `source`. */
export async function powershellSyntaxErrors(source: string): Promise<string[]> {
  await Parser.init();
  const language = await Language.load(require.resolve('tree-sitter-powershell/tree-sitter-powershell.wasm'));
  const parser = new Parser();
  parser.setLanguage(language);
  const tree = parser.parse(source);
  if (!tree) throw new Error('the PowerShell parser returned no tree');
  const errors: string[] = [];
  const walk = (node: SyntaxNode): void => {
    if (node.type === 'ERROR' || node.isMissing) errors.push(`line ${node.startPosition.row + 1}: ${node.isMissing ? `missing ${node.type}` : JSON.stringify(node.text.slice(0, 60))}`);
    for (const child of node.children) if (child) walk(child);
  };
  walk(tree.rootNode);
  return errors;
}

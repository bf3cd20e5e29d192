"""Package set-up driven by settings.ini (nbdev 2 layout)."""
from configparser import ConfigParser
import os
import setuptools

config = ConfigParser(delimiters=['='])
config.read('settings.ini', encoding='utf-8')
cfg = config['DEFAULT']

requirements = cfg.get('requirements', '').split()
dev_requirements = cfg.get('dev_requirements', '').split()
# faiss-cpu and faiss-gpu install the same `faiss` module: pick exactly one extra.
extras = {'cpu': ['faiss-cpu'], 'gpu': ['faiss-gpu'], 'dev': dev_requirements,
          'hf': ['datasets'], 'wandb': ['wandb'], 'tensorboard': ['tensorboard']}
console_scripts = [s.strip() for s in cfg.get('console_scripts', '').split('\n') if s.strip()]

setuptools.setup(
    name=cfg['lib_name'], version=cfg['version'], description=cfg['description'],
    author=cfg['author'], author_email=cfg['author_email'], license='Apache-2.0',
    packages=setuptools.find_packages(include=['lcc_nb', 'lcc_nb.*']),
    include_package_data=True, install_requires=requirements, extras_require=extras,
    python_requires='>=' + cfg['min_python'], zip_safe=False,
    keywords=cfg['keywords'].split(), url=cfg['git_url'],
    classifiers=['Programming Language :: Python :: 3', 'License :: OSI Approved :: Apache Software License'],
    long_description=open('README.md', encoding='utf-8').read() if os.path.exists('README.md') else cfg['description'],
    long_description_content_type='text/markdown',
    entry_points={'console_scripts': console_scripts, 'nbdev': [f"{cfg['lib_path']}={cfg['lib_path']}._modidx:d"]},
)
